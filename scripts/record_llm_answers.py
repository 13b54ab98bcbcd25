"""Record real answers of the bundled SmolLM2 server as the parser's test fixture.

Starts ``llama_cpp.server`` with SmolLM2-135M-Instruct (``cikg.llm.serve.llama_server``), asks the CIKGRec
interest prompt for users of dbbook2014 and book-crossing in free-text mode (``--structured off``) and in
structured mode (``json_object``, the kind llama-cpp-python's server takes), and writes one JSON line per
answer: ``dataset``, ``user_id``, ``mode`` (structured mode asked), ``response_format`` (kind sent),
``template``, ``template_version``, ``history_len``, ``titles`` (the user's titles in the prompt), ``example_titles`` (the few-shot
examples'), ``raw`` (the answer
text), ``structured`` (the answer parsed as the JSON object). Answers go through a SQLite cache, so an
interrupted recording resumes; groups are recorded in rounds, so a short run still covers every group.

    PYTHONPATH=. python scripts/record_llm_answers.py --users 55 --fewshot-users 15 --threads 2 \
        -o tests/fixtures/smollm2_answers.jsonl
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List

from cikg.data import load_dataset
from cikg.llm import LLMConfig, OpenAIBackend, ResponseCache, build_requests
from cikg.llm.parse import parse_answer
from cikg.llm.pipeline import default_domain
from cikg.llm.prompts import interest_template
from cikg.llm.serve import ServeConfig, llama_server

log = logging.getLogger("record_llm_answers")

DATASETS = ("dbbook2014", "book-crossing")
MODES = ("off", "json_object")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=55, help="users per (dataset, mode) group (default 55)")
    parser.add_argument("--round", type=int, default=5, help="users per group per round (default 5)")
    parser.add_argument("--history-len", type=int, default=20, help="titles per prompt (default 20)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp CPU threads (default 2)")
    parser.add_argument("--prompt", default="cikgrec-interests")
    parser.add_argument("--fewshot-users", type=int, default=0,
                        help="also record this many users per (dataset, mode) with cikgrec-interests-fewshot")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cikg_record_llm_cache.sqlite"))
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    plan = [(interest_template(args.prompt), args.users)]
    if args.fewshot_users:
        plan.append((interest_template("cikgrec-interests-fewshot"), args.fewshot_users))
    groups: Dict[tuple, list] = {}
    for name in DATASETS:
        dataset = load_dataset(name)
        for template, n_users in plan:
            requests, _ = build_requests(dataset, template, users=range(min(4 * args.users, dataset.n_users)),
                                         history_len=args.history_len, domain=default_domain(dataset))
            step = max(len(requests) // args.users, 1)  # spread over the users, not only the first ones
            for mode in MODES:
                groups[(name, mode, template.name)] = requests[::step][:n_users]
    rows: List[dict] = []
    with llama_server(ServeConfig(n_threads=args.threads)) as server, ResponseCache(args.cache) as cache:
        for start in range(0, max(n for _, n in plan), args.round):
            for (name, mode, _), requests in groups.items():
                if start >= len(requests):
                    continue
                config = LLMConfig(model="smollm2", base_url=server.base_url, max_tokens=args.max_tokens,
                                   concurrency=1, timeout=300, progress=False, structured=mode)
                for c in OpenAIBackend(config, cache).complete_many(requests[start:start + args.round]):
                    if not c.ok:
                        log.warning("%s user %s: %s", name, c.request.user_id, c.reason)
                        continue
                    rows.append({"dataset": name, "user_id": c.request.user_id, "mode": mode,
                                 "response_format": c.meta.get("response_format", "off"),
                                 "template": c.request.template, "template_version": c.request.template_version,
                                 "history_len": args.history_len, "titles": list(c.request.titles),
                                 "example_titles": list(c.request.example_titles), "raw": c.text,
                                 "structured": parse_answer(c.text).structured})
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            tmp.replace(args.out)
            log.info("round %d: %d answer(s) written to %s", start // args.round + 1, len(rows), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
