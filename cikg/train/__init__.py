"""Training: vectorised BPR sampling, the epoch loop with validation early stopping, checkpoint/resume."""
from .config import (
           DataConfig,
           RunConfig,
           TrainConfig,
           load_graph_recipe,
           load_run_config,
           run_config_from_dict,
)
from .sampling import BPRSampler
from .trainer import (
           PER_USER_FILE,
           FitResult,
           Trainer,
           load_run,
           load_run_dataset,
           per_user_frame,
           read_per_user,
           train_from_config,
)

__all__ = ["PER_USER_FILE", "BPRSampler", "DataConfig", "FitResult", "RunConfig", "TrainConfig", "Trainer", "load_run",
           "load_graph_recipe", "load_run_config", "load_run_dataset", "per_user_frame", "read_per_user",
           "run_config_from_dict", "train_from_config"]
