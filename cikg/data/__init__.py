"""Data layer: :class:`Dataset`, readers/writers of the KGAT/CIKGRec format, pandas, a synthetic generator.

Submodules are imported on first use of a name (``import cikg.data`` loads no torch)."""
from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .dataset import SPLITS, Dataset, pairs_to_csr
    from .frames import from_pandas, to_pandas
    from .io import data_dir, load_dataset, load_interests, resolve_dataset_path, save_dataset, uri_to_title
    from .items import ItemTable, align_items, item_table, read_items_csv
    from .split import RandomSplit, TemporalSplit, carve_validation
    from .synthetic import SyntheticConfig, synthetic

__all__ = [
    "Dataset", "ItemTable", "RandomSplit", "SPLITS", "SyntheticConfig", "TemporalSplit", "align_items",
    "carve_validation", "data_dir", "from_pandas", "item_table", "load_dataset", "load_interests", "pairs_to_csr",
    "read_items_csv", "resolve_dataset_path", "save_dataset", "synthetic", "to_pandas", "uri_to_title",
]
__getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
