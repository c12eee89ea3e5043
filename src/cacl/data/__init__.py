"""Datasets: readers that turn a folder into ``(path, pid, camid)`` lists, and the synthetic set."""

from cacl.data.readers import dataset_names, load_dataset, register_dataset
from cacl.data.types import ReidDataset, Sample, split_stats

__all__ = [
    "ReidDataset",
    "Sample",
    "dataset_names",
    "load_dataset",
    "register_dataset",
    "split_stats",
]
