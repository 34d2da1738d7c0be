"""Data: synthetic cohorts, datalists, the caching policy of bundle datasets."""

from .caching import cached_dataset
from .datalist_io import load_datalist, read_datalist

__all__ = ["cached_dataset", "load_datalist", "read_datalist"]
