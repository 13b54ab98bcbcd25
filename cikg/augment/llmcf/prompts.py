"""The LLM-CF chain-of-thought prompt (:data:`LLMCF_COT`) and one chat request per example."""
from __future__ import annotations

from typing import Any, Dict, List

from ...llm.prompts import PromptTemplate, Request
from .._shared import history_text, item_title
from .examples import Examples, example_id

LLMCF_COT = PromptTemplate(
    name="llmcf-cot",
    version="1",
    system=("You are a recommendation assistant. Think step by step in four short numbered steps. "
            "1. Analyse the user's history: which {domain} and which themes does the user like? "
            "2. Introduce the target item: what is it about? "
            "3. Judge the fit: would this user enjoy the target, and why? "
            "4. Reflect on diversity: does the target repeat the history or broaden it? "
            "Answer in at most 120 words."),
    user="User history: [{history}]\nTarget item: {target}",
)
"""The LLM-CF chain-of-thought prompt; placeholders ``domain``, ``history`` (titles) and ``target`` (title)."""


def build_cot_requests(dataset: Any, examples: Examples, template: PromptTemplate = LLMCF_COT,
                       history_len: int = 10, domain: str = "books") -> List[Request]:
    """One chat request per example; ``extra`` holds ``("item", i)`` and ``("label", y)`` (the label is never
    rendered into the prompt)."""
    histories: Dict[int, str] = {}
    requests = []
    for user, item, label in zip(examples.users.tolist(), examples.items.tolist(), examples.labels.tolist(),
                                 strict=True):
        if user not in histories:
            histories[user] = history_text(dataset, user, history_len) or "(no titled item)"
        messages = template.render(domain=domain, history=histories[user], target=item_title(dataset, item))
        frozen = tuple(tuple(sorted(m.items())) for m in messages)
        requests.append(Request(user, example_id(dataset, user, item), frozen, template.name, template.version,
                                n_titles=histories[user].count(", ") + 1,
                                extra=(("item", item), ("label", label))))
    return requests
