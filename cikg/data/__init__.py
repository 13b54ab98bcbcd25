"""Data layer: :class:`Dataset`, readers/writers of the KGAT/CIKGRec format, pandas, a synthetic generator."""
from .dataset import SPLITS, Dataset, pairs_to_csr
from .frames import from_pandas, to_pandas
from .io import data_dir, load_dataset, load_interests, resolve_dataset_path, save_dataset, uri_to_title
from .items import ItemTable, align_items, item_table, read_items_csv
from .split import RandomSplit, TemporalSplit, carve_validation
from .synthetic import SyntheticConfig, synthetic

__all__ = [
    "SPLITS", "Dataset", "ItemTable", "RandomSplit", "SyntheticConfig", "TemporalSplit", "align_items",
    "carve_validation", "item_table", "read_items_csv", "data_dir", "from_pandas", "load_dataset", "load_interests",
    "pairs_to_csr", "resolve_dataset_path", "save_dataset", "synthetic", "to_pandas", "uri_to_title",
]
