"""Training: vectorised BPR sampling, the epoch loop with validation early stopping, checkpoint/resume."""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".config": "DataConfig RunConfig TrainConfig load_graph_recipe load_run_config run_config_from_dict",
    ".sampling": "BPRSampler",
    ".trainer": "PER_USER_FILE FitResult Trainer load_run load_run_dataset per_user_frame read_per_user "
                "train_from_config",
})
