"""``cikg augment METHOD DATASET ...``: run one knowledge-augmentation method and write its NodeFeatures artifact.

The whole CLI of the four methods lives here: one scaffolding (:func:`method_parser`, the shared flags of
:data:`FLAGS` and :func:`add_backend_arguments`, the locked runner :func:`run_method`, :func:`write_outputs`)
and one ``add_<method>`` / ``<method>_command`` pair per method. The written ``DIR/features.pt`` is what
``cikg train CONFIG data.features=DIR model.features.mode=add`` reads.

Handlers import their layer when they run (start-up time: see ``cikg.cli``); the parsers need only light modules
(REKI's choices are in :mod:`cikg.augment.choices` for that reason).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._lock import holding_lock
from ..errors import ConfigError
from ..llm.base import NOT_AN_LLM
from ..llm.client import CONCURRENCY_HELP
from ..llm.commands import build_backend
from .choices import MODES, ClusterOn
from .prompts import DOMAIN_FACTORS

if TYPE_CHECKING:
    from torch import Tensor

    from .base import Augmenter, NodeFeatures
    from .kar import KAR
    from .reki import REKI

# ---------------------------------------------------------------------------------------------- scaffolding
#: the flags several methods take, each defined once: name -> (option strings, add_argument keywords)
FLAGS: Dict[str, Tuple[Tuple[str, ...], Dict[str, Any]]] = {
    "graph": (("--graph",), {"action": "store_true", "help": "also write DIR/graph.pt: the CIKG with the features"}),
    "seed": (("--seed",), {"type": int, "default": 2024}),
    "no-progress": (("--no-progress",), {"action": "store_true", "help": "no progress bars"}),
    "cf": (("--cf",), {"type": Path, "default": None, "metavar": "FILE",
                       "help": "torch file {'user': [n_users, d], 'item': [n_items, d]} of a trained recommender's "
                               "embeddings (default: truncated SVD of the train matrix)"}),
}


def add_flags(p: argparse.ArgumentParser, *names: str, **helps: str) -> None:
    """Add the shared flags ``names`` of :data:`FLAGS` in that order (``helps``: a method's own help text)."""
    for name in names:
        options, kwargs = FLAGS[name]
        p.add_argument(*options, **{**kwargs, **({"help": helps[name]} if name in helps else {})})


def method_parser(methods: Any, name: str, help: str, description: str, examples: Sequence[str],
                  dataset_help: str = "dataset name under CIKG_DATA (dbbook2014, ...) or a folder",
                  out_help: str = "output folder") -> argparse.ArgumentParser:
    """The sub-parser of one method with its examples, the ``dataset`` argument and ``-o/--out DIR``."""
    p = methods.add_parser(name, help=help, description=description,
                           epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help=dataset_help)
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help=out_help)
    return p


def add_backend_arguments(p: argparse.ArgumentParser, offline: str, answers: str, replay_help: str,
                          max_tokens: int, embedding_cache: bool = False) -> None:
    """The LLM backend flags :func:`cikg.llm.commands.build_backend` reads; ``offline`` is the default stand-in."""
    p.add_argument("--backend", choices=(offline, "openai", "openai-batch", "replay"), default=offline,
                   help=f"where {answers} come from (default: {offline}, offline, not an LLM)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server root ending in /v1")
    p.add_argument("--model", default="smollm2", help="model name on the server")
    p.add_argument("--replay", type=Path, default=None, metavar="FILE", help=replay_help)
    p.add_argument("--cache", type=Path, default=None, help="SQLite answer cache (default: DIR/llm_cache.sqlite)")
    if embedding_cache:
        p.add_argument("--embedding-cache", type=Path, default=None,
                       help="SQLite cache of encoded texts (default: DIR/embeddings.sqlite)")
    p.add_argument("--concurrency", type=int, default=None, help=CONCURRENCY_HELP)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=max_tokens)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--max-attempts", type=int, default=6)
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--batch-poll", type=float, default=30.0)


@holding_lock(lambda args: args.out)
def run_method(args: Any, run: Callable[[], List[str]]) -> int:
    """Call ``run()`` (it loads the dataset, fits, writes and returns lines) holding the lock of ``args.out`` (one
    run per output folder at a time) and print its lines."""
    sys.stdout.write("\n".join(run()) + "\n")
    return 0


def graph_lines(args: Any, dataset: Any, augmenter: Augmenter) -> List[str]:
    """With ``--graph``: write ``DIR/graph.pt``, the CIKG with the features attached; returns the line to print."""
    if not args.graph:
        return []
    from ..graph import build_cikg, save_graph

    return [f"graph with features -> {save_graph(augmenter.attach(build_cikg(dataset)), args.out / 'graph.pt')}"]


def write_outputs(args: Any, dataset: Any, augmenter: Augmenter, features: NodeFeatures) -> List[str]:
    """``DIR/features.pt`` (the artifact ``cikg train ... data.features=DIR`` reads) and, with ``--graph``,
    ``DIR/graph.pt``; returns lines to print."""
    lines = [f"{features!r} -> {features.save(args.out)}"]  # fit wrote it too; saving is atomic and idempotent
    return lines + graph_lines(args, dataset, augmenter)


def cf_of(args: Any, dataset: Any) -> Optional[Tuple[Tensor, Tensor]]:
    """The ``--cf FILE`` embeddings checked against ``dataset``, or ``None`` (the method's SVD default)."""
    from ._shared import load_cf_file

    return load_cf_file(args.cf, dataset) if args.cf is not None else None


# ---------------------------------------------------------------------------------------------- KAR and REKI
def extraction_parser(methods: Any, name: str, help: str, description: str,
                      examples: Sequence[str]) -> argparse.ArgumentParser:
    """The sub-parser of KAR or REKI with the flags they share (backend flags as ``cikg interests infer``, the
    factor prompt)."""
    p = method_parser(methods, name, help, description, examples,
                      dataset_help="dataset name under CIKG_DATA (dbbook2014, ...) or a dataset folder",
                      out_help="output folder: features.pt, answers.jsonl (replay file), augment_summary.json")
    add_backend_arguments(p, "kg-profile", "answers", "an answers.jsonl to replay", max_tokens=128,
                          embedding_cache=True)
    add_flags(p, "seed")
    p.add_argument("--history-len", type=int, default=20, help="last train items in a user's prompt (default: 20)")
    p.add_argument("--domain", choices=tuple(DOMAIN_FACTORS), default=None, help="default: from the dataset name")
    p.add_argument("--factors", default=None, help="comma-separated factor list (default: the domain's)")
    p.add_argument("--ask-factors", action="store_true", help="ask the LLM for the factor list once")
    add_flags(p, "graph", "no-progress")
    return p


def extraction_fields(args: Any) -> Dict[str, Any]:
    """The :class:`~cikg.augment.kar.KARConfig` fields the KAR/REKI flags set."""
    factors = tuple(f.strip() for f in args.factors.split(",")) if args.factors else None
    return {"domain": args.domain, "factors": factors, "ask_factors": args.ask_factors,
            "history_len": args.history_len}


def extraction_lines(args: Any, make: Callable[[Any, Any, Any], Augmenter]) -> List[str]:
    """Load the dataset, build backend and encoder from ``args``, fit ``make(dataset, backend, encoder)`` and
    describe the outputs."""
    from ..data import load_dataset
    from ..embed import Encoder
    from .kar import ANSWERS_FILE, SUMMARY_FILE

    dataset = load_dataset(args.dataset)
    backend = build_backend(args, dataset)
    encoder = Encoder(args.embedding_cache or args.out / "embeddings.sqlite", show_progress=not args.no_progress)
    augmenter = make(dataset, backend, encoder)
    features = augmenter.fit(dataset)
    p = features.provenance
    label = f" ({NOT_AN_LLM})" if p["not_an_llm"] else ""
    lines = [f"{p['method'].upper()} on {dataset.name}: {features!r}",
             f"backend {p['backend']}{label}, model {p['llm_model']}: {p['n_calls']} prompt(s) "
             f"({p['n_sent']} sent, {p['n_cached']} cached, {p['n_failed']} failed), "
             f"{p['prompt_tokens'] + p['completion_tokens']} tokens; extraction {p['seconds']:.1f} s, "
             f"encoding {p['encode_seconds']:.1f} s",
             f"blocks {features.blocks}",
             f"written: {args.out / 'features.pt'}, {args.out / ANSWERS_FILE} (replay), {args.out / SUMMARY_FILE}"]
    lines += graph_lines(args, dataset, augmenter)
    lines.append(f"train with: cikg train CONFIG data.features={args.out} model.features.mode=add "
                 "model.features.adaptor=experts")
    return lines


def add_kar(methods: Any) -> None:
    """Add ``kar`` to the sub-parsers of ``cikg augment``."""
    p = extraction_parser(
        methods, "kar",
        help="KAR: factorization-prompted reasoning (users) and factual (items) knowledge (arXiv 2306.10933)",
        description="One preference-reasoning prompt per user and one factual prompt per item along the domain's "
                    "factors; answers encoded with the sentence encoder and written as node features.",
        examples=["cikg augment kar dbbook2014 -o runs/kar-dbbook2014                 # offline kg-profile",
                  "cikg augment kar dbbook2014 -o runs/again --backend replay --replay runs/kar-dbbook2014/answers.jsonl",
                  "cikg augment kar book-crossing -o runs/kar-bx --backend openai --base-url http://127.0.0.1:8080/v1"])
    p.set_defaults(func=kar_command)


def kar_command(args: Any) -> int:
    from .kar import KAR, KARConfig

    def make(dataset: Any, backend: Any, encoder: Any) -> KAR:
        return KAR(KARConfig(**extraction_fields(args)), backend, encoder, args.out)

    return run_method(args, lambda: extraction_lines(args, make))


def add_reki(methods: Any) -> None:
    """Add ``reki`` to the sub-parsers of ``cikg augment``."""
    p = extraction_parser(
        methods, "reki", help="REKI: individual and collective (clustered) knowledge extraction (arXiv 2408.10520)",
        description="Cluster users and items, one prompt per group from a sample of its members (collective), "
                    "and/or KAR's per-user and per-item prompts (individual); writes node features.",
        examples=["cikg augment reki dbbook2014 -o runs/reki-dbbook2014 --groups 50",
                  "cikg augment reki dbbook2014 -o runs/reki-both --mode both --user-groups 100 --item-groups 50",
                  "cikg augment reki dbbook2014 -o runs/x --call-counts 10,50,100,500   # the LLM-call table only"])
    p.add_argument("--mode", choices=MODES, default="collective")
    p.add_argument("--groups", type=int, default=None, help="user and item groups (sets both)")
    p.add_argument("--user-groups", type=int, default=50)
    p.add_argument("--item-groups", type=int, default=50)
    p.add_argument("--cluster-on", choices=[c.value for c in ClusterOn], default=ClusterOn.HISTORY.value)
    add_flags(p, "cf", cf="torch file {'user': [n_users, d], 'item': [n_items, d]} for --cluster-on cf")
    p.add_argument("--sample-size", type=int, default=10, help="members per group prompt (default: 10)")
    p.add_argument("--call-counts", default=None, metavar="G1,G2,...",
                   help="print the LLM calls of individual vs collective extraction at these group counts and exit")
    p.set_defaults(func=reki_command)


def reki_command(args: Any) -> int:
    from ..data import load_dataset
    from .reki import REKI, REKIConfig, call_counts

    if args.call_counts:
        try:
            counts = [int(g) for g in args.call_counts.split(",")]
        except ValueError:
            raise ConfigError(f"expected comma-separated integers, got {args.call_counts!r}", "call-counts") from None
        sys.stdout.write(call_counts(load_dataset(args.dataset), counts).to_string(index=False) + "\n")
        return 0
    config = REKIConfig(**extraction_fields(args), mode=args.mode, n_user_groups=args.groups or args.user_groups,
                        n_item_groups=args.groups or args.item_groups, cluster_on=args.cluster_on,
                        sample_size=args.sample_size, seed=args.seed)
    def make(dataset: Any, backend: Any, encoder: Any) -> REKI:
        return REKI(config, backend, encoder, args.out, cf_of(args, dataset))

    return run_method(args, lambda: extraction_lines(args, make))


# ---------------------------------------------------------------------------------------------- LLM-CF and CoCo
def add_llmcf(methods: Any) -> None:
    """Add ``llmcf`` to the sub-parsers of ``cikg augment``."""
    p = method_parser(
        methods, "llmcf", help="LLM-CF: in-context chain-of-thought user features (arXiv 2403.17688)",
        description="Sample labelled train examples, generate a chain-of-thought per example, encode them, "
                    "retrieve the top-K per user and pre-train the ICT transformer; writes per-user features.",
        examples=["cikg augment llmcf dbbook2014 -o runs/dbbook-llmcf                  # offline cot-profile",
                  "cikg augment llmcf dbbook2014 -o runs/again --backend replay "
                  "--replay runs/dbbook-llmcf/cot_examples.jsonl",
                  "cikg augment llmcf book-crossing -o runs/bx-llmcf --backend openai "
                  "--base-url http://127.0.0.1:8080/v1 --model smollm2 --examples 500"])
    add_flags(p, "cf", "graph", "seed", "no-progress")
    add_backend_arguments(p, "cot-profile", "chain-of-thought answers", "a cot_examples.jsonl to replay",
                          max_tokens=200)
    p.add_argument("--examples", type=int, default=2000, help="examples in the CoT dataset (default: 2000)")
    p.add_argument("--k", type=int, default=4, help="examples retrieved per user (default: 4)")
    p.add_argument("--epochs", type=int, default=30, help="ICT pre-training epochs (default: 30)")
    p.add_argument("--dim", type=int, default=64, help="ICT width = feature size (default: 64)")
    p.add_argument("--history-len", type=int, default=10, help="last train titles per user (default: 10)")
    p.set_defaults(func=llmcf_command)


def llmcf_command(args: Any) -> int:
    from ..data import load_dataset
    from ..embed import Encoder
    from .llmcf import LLMCF, CoTProfileBackend, LLMCFConfig

    def run() -> List[str]:
        config = LLMCFConfig(n_examples=args.examples, k=args.k, epochs=args.epochs, dim=args.dim,
                             history_len=args.history_len, seed=args.seed)
        dataset = load_dataset(args.dataset)
        backend = CoTProfileBackend(dataset) if args.backend == "cot-profile" else build_backend(args, dataset)
        cf = cf_of(args, dataset)
        encoder = Encoder(args.out / "embeddings.sqlite", show_progress=not args.no_progress)
        augmenter = LLMCF(config, backend, encoder, cf, args.out, progress=not args.no_progress)
        features = augmenter.fit(dataset)
        p = features.provenance
        lines = [f"LLM-CF on {dataset.name}: {p['examples']} examples from {p['backend']}"
                 + (f" ({NOT_AN_LLM})" if p["not_an_llm"] else "")
                 + f", {p['n_calls']} LLM call(s), {p['prompt_tokens'] + p['completion_tokens']} tokens",
                 f"ICT pre-training: best epoch {p['ict_best_epoch']}, "
                 + ", ".join(f"{k} {v:.4f}" for k, v in p["ict_best"].items() if k != "epoch"),
                 f"wall time {p['seconds']:.1f} s; CoT dataset and replay file in {args.out}"]
        return lines + write_outputs(args, dataset, augmenter, features)

    return run_method(args, run)


def add_coco(methods: Any) -> None:
    """Add ``coco`` to the sub-parsers of ``cikg augment``."""
    p = method_parser(
        methods, "coco", help="CoCo: VQ-selected soft prompts + contradiction-targeted LoRA (arXiv 2510.14257)",
        description="Train a codebook of soft prompts selected from collaborative embeddings, encode each user's "
                    "history with the chosen prompt, judge where the knowledge hurts validation confidence and "
                    "LoRA-fine-tune the LM on those users; writes per-user knowledge vectors.",
        examples=["cikg augment coco dbbook2014 -o runs/dbbook-coco",
                  "cikg augment coco dbbook2014 -o runs/c --model /path/to/hf-model --codes 32 --lora-epochs 0"])
    add_flags(p, "cf", "graph", "seed", "no-progress")
    p.add_argument("--model", default=None, help="Hugging Face model name or path (default: shipped MiniLM)")
    p.add_argument("--codes", type=int, default=16, help="codebook entries (default: 16)")
    p.add_argument("--prompt-len", type=int, default=4, help="vectors per soft prompt (default: 4)")
    p.add_argument("--epochs", type=int, default=2, help="selector training epochs (default: 2)")
    p.add_argument("--lora-epochs", type=int, default=2, help="LoRA epochs on flagged users (0: no LoRA)")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--margin", type=float, default=0.0, help="judge margin (default: 0)")
    p.add_argument("--max-tokens", type=int, default=64, help="history text token budget (default: 64)")
    p.add_argument("--users", type=int, default=None, metavar="N", help="only the first N users")
    p.set_defaults(func=coco_command)


def coco_command(args: Any) -> int:
    from ..data import load_dataset
    from .coco import CoCo, CoCoConfig

    def run() -> List[str]:
        config = CoCoConfig(model=args.model, n_codes=args.codes, prompt_len=args.prompt_len, epochs=args.epochs,
                            lora_epochs=args.lora_epochs, lora_r=args.lora_r, margin=args.margin,
                            max_tokens=args.max_tokens, seed=args.seed)
        if args.users is not None and args.users < 1:
            raise ConfigError(f"--users must be >= 1, got {args.users}", key="users")
        dataset = load_dataset(args.dataset)
        cf = cf_of(args, dataset)
        users = None if args.users is None else range(min(args.users, dataset.n_users))
        augmenter = CoCo(config, cf, users, args.out, progress=not args.no_progress)
        features = augmenter.fit(dataset)
        p = features.provenance
        lines = [f"CoCo on {dataset.name}: {p['users']} user(s), LM {p['llm_model']}, {p['codes_used']} of "
                 f"{config.n_codes} soft prompts used"] + augmenter.result.report.lines()
        return lines + [f"wall time {p['seconds']:.1f} s"] + write_outputs(args, dataset, augmenter, features)

    return run_method(args, run)


# ---------------------------------------------------------------------------------------------- registration
#: the methods of ``cikg augment``, in the order ``--help`` lists them
METHODS: Dict[str, Callable[[Any], None]] = {"kar": add_kar, "reki": add_reki, "llmcf": add_llmcf, "coco": add_coco}


def register(subparsers: Any) -> None:
    """Add ``augment`` with one sub-command per method to the ``cikg`` sub-parsers."""
    parser = subparsers.add_parser(
        "augment", help="turn LLM knowledge into user/item node features (KAR, REKI, LLM-CF, CoCo)",
        description="Extract knowledge with an LLM backend (or an offline one), encode it and write "
                    "DIR/features.pt; train with `cikg train CONFIG data.features=DIR model.features.mode=add`.",
        epilog="examples:\n  cikg augment kar dbbook2014 --backend kg-profile --out runs/kar-dbbook2014\n"
               "  cikg augment reki dbbook2014 --groups 50 --out runs/reki-dbbook2014\n"
               "  cikg train experiments/dbbook2014/augment-lightgcn.yaml  # uses runs/augment/dbbook2014/features/kar",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    methods = parser.add_subparsers(dest="augment_method", required=True, metavar="METHOD")
    for add in METHODS.values():
        add(methods)


__all__ = ["FLAGS", "METHODS", "add_backend_arguments", "add_coco", "add_flags",
           "add_kar", "add_llmcf", "add_reki", "cf_of", "coco_command", "extraction_fields", "extraction_lines",
           "extraction_parser", "graph_lines", "kar_command", "llmcf_command", "method_parser", "register",
           "reki_command", "run_method", "write_outputs"]
