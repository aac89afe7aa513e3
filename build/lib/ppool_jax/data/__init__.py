"""Datasets (synthetic default, VOC/Cityscapes/ADE20K readers) and the input pipeline.

TFDS builders live in ``ppool_jax.data.tfds_builders`` (imported on demand: they pull in
tensorflow_datasets).
"""

from ppool_jax.data.folders import DATASETS, DatasetError, FolderSource, get_spec, read_example
from ppool_jax.data.pipeline import (IGNORE, AugmentConfig, TrainLoader, augment, eval_batches,
                                     normalize)
from ppool_jax.data.synthetic import CLASSES, NUM_CLASSES, SyntheticSource, generate

__all__ = ["DATASETS", "DatasetError", "FolderSource", "get_spec", "read_example", "IGNORE",
           "AugmentConfig", "TrainLoader", "augment", "eval_batches", "normalize", "CLASSES",
           "NUM_CLASSES", "SyntheticSource", "generate"]
