"""``cikg recommend``, ``cikg export`` and ``cikg serve``: using a trained run directory.

Handlers import their layer when they run (start-up time: see ``cikg.cli``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List

from ..errors import CikgError
from ..train.commands import add_import_option, add_load_device_option, import_models

FORMATS = (".csv", ".parquet")


def _read_users_file(path: Path) -> List[tuple]:
    """``(line number, id)`` of each non-blank, non-comment line of a users file."""
    if not path.is_file():
        raise CikgError(f"{path}: no such users file")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]


def _users(args: argparse.Namespace, model) -> Any:
    from .model import UnknownIdError

    if args.all:
        return None
    if args.users is not None:
        users = [u.strip() for u in args.users.split(",") if u.strip()]
        if not users:
            raise CikgError("--users: expected comma-separated user ids, got none")
        return users
    numbered = _read_users_file(Path(args.users_file))
    if not numbered:
        raise CikgError(f"{args.users_file}: no user ids (one per line)")
    try:
        model.dense_ids("user", [u for _, u in numbered])
    except UnknownIdError as err:
        line = next(n for n, u in numbered if u == err.ids[0])
        raise CikgError(f"{args.users_file}:{line}: {err}") from None
    return [u for _, u in numbered]


def _cmd_recommend(args: argparse.Namespace) -> int:
    from .._io import atomic_path
    from .model import load_model

    out = Path(args.output) if args.output else None
    if out is not None and out.suffix not in FORMATS:
        raise CikgError(f"{out}: expected a .csv or .parquet output file")
    import_models(args)
    model = load_model(args.run_dir, device=args.device)
    frame = model.recommend(_users(args, model), k=args.k, exclude_seen=not args.include_seen)
    if out is None:
        print(frame.to_string(index=False))
        return 0
    with atomic_path(out) as tmp:
        if out.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    print(f"wrote {len(frame)} recommendations for {frame['user'].nunique()} users "
          f"({'seen items kept' if args.include_seen else 'seen items excluded'}) to {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run
    from .model import load_model

    import_models(args)
    manifest = export_run(load_model(args.run_dir), args.output)
    for name, info in manifest["files"].items():
        print(f"{Path(args.output) / name}: {info['rows']} rows")
    print(f"exported {manifest['model']} ({manifest['dim']}-d, scores = {manifest['score']}) to {args.output}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from .app import serve
    from .model import load_model

    _check_bindable(args.host, args.port)  # before the model loads: a busy port is one line, exit 2
    if args.threads:
        torch.set_num_threads(args.threads)
    import_models(args)
    model = load_model(args.run_dir, device=args.device)
    print(f"serving {model!r} on http://{args.host}:{args.port} (Ctrl-C or SIGTERM to stop)", flush=True)
    stopped_by = serve(model, host=args.host, port=args.port, log_level=args.log_level)
    print(f"stopped{f' by {stopped_by}' if stopped_by else ''}", flush=True)
    return 0


def _check_bindable(host: str, port: int) -> None:
    import socket

    from ..errors import describe_os_error

    if not 0 <= port <= 65535:
        raise CikgError(f"--port must be in 0..65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind((host, port))
    except OSError as err:
        raise CikgError(f"cannot listen on {host}:{port}: {describe_os_error(err)} (another server there? "
                        "choose another --port)") from None


def register(subparsers: Any) -> None:
    """Add ``recommend``, ``export`` and ``serve`` to the ``cikg`` sub-parsers."""
    from .._argparse import parser_kwargs as _kwargs
    p = subparsers.add_parser("recommend", **_kwargs(
        "top-k recommendations of a run for some or all users (original ids, seen items excluded)",
        "cikg recommend runs/quick --users u0,u7 -k 10",
        "cikg recommend runs/quick --users-file users.txt -k 20 -o recs.parquet",
        "cikg recommend runs/quick --all -k 10 -o recs.csv --include-seen"))
    p.add_argument("run_dir")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="comma-separated original user ids (user_list.txt)")
    who.add_argument("--users-file", help="a file with one original user id per line")
    who.add_argument("--all", action="store_true", help="every user of the dataset")
    p.add_argument("-k", type=int, default=10, help="items per user (default 10)")
    add_load_device_option(p)
    p.add_argument("-o", "--output", help="a .csv or .parquet file (default: print the table)")
    p.add_argument("--include-seen", action="store_true", help="keep the users' train and validation items")
    add_import_option(p)
    p.set_defaults(func=_cmd_recommend)

    p = subparsers.add_parser("export", **_kwargs(
        "write a run's embeddings (parquet, original ids) and a FAISS inner-product index of its items",
        "cikg export runs/quick -o runs/quick-export"))
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", required=True, help="output directory")
    add_import_option(p)
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("serve", **_kwargs(
        "serve a run over HTTP (FastAPI + uvicorn): /recommend, POST /recommend (fold-in), /similar-items, /health",
        "cikg serve runs/quick --port 8000",
        "curl 'http://127.0.0.1:8000/recommend?user=u0&k=5'"))
    p.add_argument("run_dir")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    add_load_device_option(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_import_option(p)
    p.set_defaults(func=_cmd_serve)


__all__ = ["register"]
