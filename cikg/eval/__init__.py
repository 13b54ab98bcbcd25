"""Full-ranking evaluation (Recall / NDCG / Precision / Hit @K over all items, blocked over users) and
the per-activity-group (sparse user) breakdown."""
from .evaluator import EvalResult, Evaluator, evaluate_embeddings
from .groups import activity_groups
from .ranking import METRICS, csr_rows, top_items

__all__ = ["METRICS", "EvalResult", "Evaluator", "activity_groups", "csr_rows", "evaluate_embeddings",
           "top_items"]
