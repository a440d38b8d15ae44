"""Datasets: the sample record, adapters for the official layouts, splits, DermSynth."""
from dermbench.data.sample import DatasetError, Sample, TaskData

__all__ = ["DatasetError", "Sample", "TaskData"]
