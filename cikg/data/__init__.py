"""Data layer: :class:`Dataset`, readers/writers of the KGAT/CIKGRec format, pandas, a synthetic generator.

Submodules are imported on first use of a name (``import cikg.data`` loads no torch)."""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".dataset": "SPLITS Dataset pairs_to_csr",
    ".frames": "from_pandas to_pandas",
    ".io": "data_dir load_dataset load_interests resolve_dataset_path save_dataset uri_to_title",
    ".items": "ItemTable align_items item_table read_items_csv",
    ".split": "RandomSplit TemporalSplit carve_validation",
    ".synthetic": "SyntheticConfig synthetic",
})
