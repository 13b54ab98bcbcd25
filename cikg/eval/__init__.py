"""Full-ranking evaluation (Recall / NDCG / Precision / Hit @K over all items, blocked over users), the
per-activity-group (sparse user) breakdown, and the CTR protocol (AUC / GAUC / Logloss on sampled pairs)."""
from .ctr import CTRNegatives, CTRResult, auc, evaluate_ctr, gauc, logloss, sample_ctr_negatives
from .evaluator import EvalResult, Evaluator, evaluate_embeddings
from .groups import activity_groups
from .ranking import METRICS, csr_rows, top_items

__all__ = ["METRICS", "CTRNegatives", "CTRResult", "EvalResult", "Evaluator", "activity_groups", "auc",
           "csr_rows", "evaluate_ctr", "evaluate_embeddings", "gauc", "logloss", "sample_ctr_negatives",
           "top_items"]
