"""Data layer: :class:`Dataset`, readers/writers of the KGAT/CIKGRec format, pandas, a synthetic generator."""
from .dataset import SPLITS, Dataset, pairs_to_csr
from .frames import from_pandas, to_pandas
from .io import data_dir, load_dataset, load_interests, resolve_dataset_path, save_dataset, uri_to_title
from .split import carve_validation
from .synthetic import SyntheticConfig, synthetic

__all__ = [
    "SPLITS", "Dataset", "SyntheticConfig", "carve_validation", "data_dir", "from_pandas", "load_dataset", "load_interests",
    "pairs_to_csr", "resolve_dataset_path", "save_dataset", "synthetic", "to_pandas", "uri_to_title",
]
