"""Datasets (synthetic default, VOC/Cityscapes/ADE20K readers, one's own folder), the registry
that names them all (``ppool_jax.data.registry``) and the input pipeline.

TFDS builders live in ``ppool_jax.data.tfds_builders`` (imported on demand: they pull in
tensorflow_datasets). ``TrainLoader`` (``ppool_jax.data.loader``, on grain) is imported on
first use.
"""

from ppool_jax.data.folders import DATASETS, DatasetError, FolderSource, get_spec, read_example
from ppool_jax.data.pipeline import IGNORE, AugmentConfig, augment, eval_batches, normalize
from ppool_jax.data.synthetic import CLASSES, NUM_CLASSES, SyntheticSource, generate

__all__ = ["DATASETS", "DatasetError", "FolderSource", "get_spec", "read_example", "IGNORE",
           "AugmentConfig", "TrainLoader", "augment", "eval_batches", "normalize", "CLASSES",
           "NUM_CLASSES", "SyntheticSource", "generate"]


def __getattr__(name: str):
  if name == "TrainLoader":
    from ppool_jax.data.loader import TrainLoader
    return TrainLoader
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
