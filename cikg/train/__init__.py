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
from .trainer import FitResult, Trainer, load_run, load_run_dataset, train_from_config

__all__ = ["BPRSampler", "DataConfig", "FitResult", "RunConfig", "TrainConfig", "Trainer", "load_run",
           "load_graph_recipe", "load_run_config", "load_run_dataset", "run_config_from_dict", "train_from_config"]
