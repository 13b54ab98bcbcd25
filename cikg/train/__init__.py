"""Training: vectorised BPR sampling, the epoch loop with validation early stopping, checkpoint/resume."""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
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

__all__ = [
    "BPRSampler", "DataConfig", "FitResult", "PER_USER_FILE", "RunConfig", "TrainConfig", "Trainer",
    "load_graph_recipe", "load_run", "load_run_config", "load_run_dataset", "per_user_frame", "read_per_user",
    "run_config_from_dict", "train_from_config",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
