"""Data: synthetic cohorts, datalists."""

from .datalist_io import load_datalist, read_datalist

__all__ = ["load_datalist", "read_datalist"]
