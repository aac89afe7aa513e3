"""TFDS builders for VOC 2012 + SBD, Cityscapes (fine) and ADE20K, from a manual directory.

They convert an extracted dataset (layouts in ``ppool_jax.data.folders``) once into
ArrayRecord files; training then reads them with ``tfds.data_source`` — random access,
no TensorFlow at read time, which our deterministic, resumable numpy pipeline needs
(every batch is a pure function of ``(seed, step)``). Preparing needs TensorFlow
(``pip install 'ppool_jax[prepare]'``) because ``tfds.features.Image`` encodes PNGs with it;
reading needs only TensorFlow Datasets (``pip install 'ppool_jax[tfds]'``). Without them,
importing this module is an ImportError naming the extra::

  python -m ppool_jax.data.prepare --dataset voc_aug --manual_dir ~/data/VOCdevkit/VOC2012 \\
      --data_dir ~/tensorflow_datasets
"""

from __future__ import annotations

import os

import numpy as np

from ppool_jax.data.folders import get_spec, read_example
from ppool_jax.extras import require

tfds = require("tensorflow_datasets", "tfds")

_INSTRUCTIONS = {
    "voc_aug": "Extract VOCtrainval_11-May-2012.tar and the SBD augmentation "
               "(SegmentationClassAug + train_aug.txt) into one VOCdevkit/VOC2012 folder and pass "
               "it as manual_dir.",
    "cityscapes": "Extract leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into one folder "
                  "and pass it as manual_dir.",
    "ade20k": "Extract ADEChallengeData2016.zip and pass the ADEChallengeData2016 folder as "
              "manual_dir.",
}


class _SegmentationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared builder: image, label (train ids, ignore 255) and key, one split per spec split."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release (ppool_jax)."}
  DATASET = ""

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.DATASET} semantic segmentation with train ids (ignore 255).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.Image(shape=(None, None, 1)),
            "key": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    spec = get_spec(self.DATASET)
    root = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(spec.list_examples(root, split))
            for split in spec.splits}

  def _generate_examples(self, examples):
    spec = get_spec(self.DATASET)
    for ex in examples:
      decoded = read_example(ex, spec)
      yield ex.key, {"image": decoded["image"], "label": decoded["label"][..., None],
                     "key": ex.key}


class VocAugSeg(_SegmentationBuilder):
  DATASET = "voc_aug"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS["voc_aug"]


class CityscapesSeg(_SegmentationBuilder):
  DATASET = "cityscapes"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS["cityscapes"]


class Ade20kSeg(_SegmentationBuilder):
  DATASET = "ade20k"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS["ade20k"]


BUILDERS = {"voc_aug": VocAugSeg, "cityscapes": CityscapesSeg, "ade20k": Ade20kSeg}


def prepare(dataset: str, manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Converts the extracted dataset at ``manual_dir`` into ArrayRecord files in ``data_dir``."""
  require("tensorflow", "prepare")  # tfds.features.Image encodes with it
  spec = get_spec(dataset)
  for split in spec.splits:  # a DatasetError naming what is missing, before TFDS starts
    spec.list_examples(manual_dir, split)
  builder = BUILDERS[dataset](data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


class TfdsSource:
  """``tfds.data_source`` of a prepared dataset with labels squeezed to ``(H, W)``."""

  def __init__(self, dataset: str, split: str, data_dir: str):
    builder = BUILDERS[dataset](data_dir=data_dir, file_format="array_record")
    if not os.path.isdir(builder.data_dir):
      raise FileNotFoundError(
          f"{dataset}: no prepared TFDS data at {builder.data_dir}; run "
          f"`python -m ppool_jax.data.prepare --dataset {dataset} --manual_dir <extracted folder> "
          f"--data_dir {data_dir}` first.")
    self.source = builder.as_data_source(split=split)
    self.num_classes = get_spec(dataset).num_classes

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    ex = self.source[i]
    return {"image": np.asarray(ex["image"]), "label": np.asarray(ex["label"])[..., 0]}
