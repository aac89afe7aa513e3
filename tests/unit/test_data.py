"""Synthetic data, dataset readers on fake folder layouts, TFDS builders, input pipeline."""

import os

import numpy as np
import pytest
from PIL import Image

from ppool_jax.data import (AugmentConfig, DatasetError, FolderSource, SyntheticSource,
                            TrainLoader, augment, eval_batches, generate, normalize)
from ppool_jax.data.synthetic import DETAIL_CLASSES, IGNORE, NUM_CLASSES


# --- synthetic ------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_seeded():
  a = generate(5, 48, seed=3)
  b = generate(5, 48, seed=3)
  c = generate(5, 48, seed=4)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[1], c[1])
  # Sample i depends only on (seed, i): a longer run starts with the same samples.
  np.testing.assert_array_equal(generate(8, 48, seed=3)[1][:5], a[1])


def test_synthetic_has_every_class_thin_structures_and_ignore():
  images, labels = generate(64, 64, seed=0)
  assert images.dtype == np.uint8 and images.shape == (64, 64, 64, 3)
  present = set(np.unique(labels).tolist())
  assert present == set(range(NUM_CLASSES)) | {IGNORE}
  # Poles (class 2) are 1-3 px wide: count horizontal run lengths.
  widths = []
  for lab in labels:
    for row in lab:
      run = 0
      for v in list(row) + [0]:
        if v == 2:
          run += 1
        elif run:
          widths.append(run)
          run = 0
  assert min(widths) >= 1 and np.percentile(widths, 90) <= 3


def test_synthetic_details_are_lost_by_average_downsampling():
  """What makes the dataset detail-sensitive: an oracle that sees the labels only through
  4x4 average pooling (argmax of pooled one-hots, upsampled) keeps blobs but loses most
  thin structures and small objects."""
  _, labels = generate(32, 64, seed=1)
  onehot = np.eye(256, dtype=np.float32)[labels][..., :NUM_CLASSES]
  pooled = onehot.reshape(32, 16, 4, 16, 4, NUM_CLASSES).mean(axis=(2, 4))
  rec = np.repeat(np.repeat(pooled.argmax(-1), 4, axis=1), 4, axis=2)
  valid = labels != IGNORE

  def iou(c):
    a, b = (labels == c) & valid, (rec == c) & valid
    return (a & b).sum() / (a | b).sum()

  assert iou(1) > 0.8
  assert np.mean([iou(c) for c in DETAIL_CLASSES]) < 0.5


def test_synthetic_rejects_bad_sizes():
  with pytest.raises(ValueError, match="size must be >= 16"):
    generate(2, 8)
  with pytest.raises(ValueError, match="num must be >= 1"):
    generate(0)


# --- fake dataset layouts -------------------------------------------------------------------
def _save(path, array, palette=False):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  im = Image.fromarray(array)
  if palette:
    im = im.convert("P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im = Image.fromarray(array, mode="L").convert("P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
  im.save(path)


def make_voc(root, n=3, size=(20, 24)):
  rng = np.random.default_rng(0)
  ids = [f"2007_{i:06d}" for i in range(n)]
  labels = {}
  for i in ids:
    _save(os.path.join(root, "JPEGImages", f"{i}.jpg"),
          rng.integers(0, 255, size + (3,), dtype=np.uint8))
    lab = rng.integers(0, 21, size, dtype=np.uint8)
    lab[0] = 255
    labels[i] = lab
    _save(os.path.join(root, "SegmentationClass", f"{i}.png"), lab, palette=True)
    _save(os.path.join(root, "SegmentationClassAug", f"{i}.png"), lab)
  os.makedirs(os.path.join(root, "ImageSets", "Segmentation"), exist_ok=True)
  for split, chosen in (("train", ids[:2]), ("val", ids[2:]), ("train_aug", ids[:2])):
    with open(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
      f.write("\n".join(chosen) + "\n")
  return labels


def make_cityscapes(root, size=(16, 32)):
  rng = np.random.default_rng(1)
  raw = {}
  for split, cities in (("train", ["aachen", "bochum"]), ("val", ["frankfurt"])):
    for city in cities:
      stem = f"{city}_000000_000019"
      _save(os.path.join(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"),
            rng.integers(0, 255, size + (3,), dtype=np.uint8))
      lab = rng.integers(0, 34, size, dtype=np.uint8)
      raw[stem] = lab
      _save(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png"), lab)
  return raw


def make_ade(root, size=(18, 22)):
  rng = np.random.default_rng(2)
  raw = {}
  for split, folder in (("train", "training"), ("val", "validation")):
    for i in range(2):
      stem = f"ADE_{split}_{i + 1:08d}"
      _save(os.path.join(root, "images", folder, f"{stem}.jpg"),
            rng.integers(0, 255, size + (3,), dtype=np.uint8))
      lab = rng.integers(0, 151, size, dtype=np.uint8)
      raw[stem] = lab
      _save(os.path.join(root, "annotations", folder, f"{stem}.png"), lab)
  return raw


def test_voc_reader(tmp_path):
  labels = make_voc(str(tmp_path))
  src = FolderSource("voc_aug", str(tmp_path), "train_aug")
  assert len(src) == 2 and src.num_classes == 21
  ex = src[1]
  assert ex["image"].shape == (20, 24, 3)
  np.testing.assert_array_equal(ex["label"], labels["2007_000001"])
  val = FolderSource("voc_aug", str(tmp_path), "val")
  np.testing.assert_array_equal(val[0]["label"], labels["2007_000002"])  # palette PNG


def test_cityscapes_reader_maps_label_ids_to_train_ids(tmp_path):
  raw = make_cityscapes(str(tmp_path))
  src = FolderSource("cityscapes", str(tmp_path), "train")
  assert [e.key for e in src.examples] == ["aachen_000000_000019", "bochum_000000_000019"]
  lab = src[0]["label"]
  r = raw["aachen_000000_000019"]
  official = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
              24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
  expected = np.vectorize(lambda v: official.get(int(v), 255))(r)
  np.testing.assert_array_equal(lab, expected)


def test_ade20k_reader_shifts_ids_and_ignores_other(tmp_path):
  raw = make_ade(str(tmp_path))
  src = FolderSource("ade20k", str(tmp_path), "val")
  r = raw["ADE_val_00000001"]
  expected = np.where(r == 0, 255, r.astype(np.int32) - 1)
  np.testing.assert_array_equal(src[0]["label"], expected)


def test_reader_errors_name_the_file(tmp_path):
  root = str(tmp_path)
  with pytest.raises(DatasetError, match="directory not found: .*VOC"):
    FolderSource("voc_aug", os.path.join(root, "VOC"), "val")
  make_voc(root)
  os.remove(os.path.join(root, "JPEGImages", "2007_000002.jpg"))
  with pytest.raises(DatasetError, match="file not found: .*2007_000002.jpg"):
    FolderSource("voc_aug", root, "val")[0]
  # image / label size mismatch
  _save(os.path.join(root, "JPEGImages", "2007_000002.jpg"), np.zeros((10, 10, 3), np.uint8))
  with pytest.raises(DatasetError, match=r"2007_000002.jpg is 10x10 but label .*2007_000002.png is 24x20"):
    FolderSource("voc_aug", root, "val")[0]
  # label ids out of range
  _save(os.path.join(root, "JPEGImages", "2007_000000.jpg"), np.zeros((20, 24, 3), np.uint8))
  _save(os.path.join(root, "SegmentationClass", "2007_000000.png"), np.full((20, 24), 30, np.uint8))
  with pytest.raises(DatasetError, match=r"2007_000000.png has ids out of range: \[30\]"):
    FolderSource("voc_aug", root, "train")[0]
  with pytest.raises(ValueError, match="unknown split"):
    FolderSource("voc_aug", root, "test")


def test_tfds_builder_roundtrip_matches_folder_reader(tmp_path):
  tfds_builders = pytest.importorskip("ppool_jax.data.tfds_builders")
  manual = str(tmp_path / "cityscapes")
  make_cityscapes(manual)
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match="no prepared TFDS data"):
    tfds_builders.TfdsSource("cityscapes", "val", data_dir)
  builder = tfds_builders.prepare("cityscapes", manual, data_dir)
  assert builder.info.splits["train"].num_examples == 2
  src = tfds_builders.TfdsSource("cityscapes", "train", data_dir)
  folder = FolderSource("cityscapes", manual, "train")
  got = sorted((src[i] for i in range(len(src))), key=lambda e: e["image"].sum())
  want = sorted((folder[i] for i in range(len(folder))), key=lambda e: e["image"].sum())
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g["image"], w["image"])
    np.testing.assert_array_equal(g["label"], w["label"])


# --- pipeline -------------------------------------------------------------------------------
def test_augment_keeps_image_and_label_aligned():
  rng = np.random.default_rng(0)
  label = rng.integers(0, 6, (30, 40)).astype(np.uint8)
  image = np.stack([label * 40, label * 40, label * 40], -1).astype(np.uint8)
  cfg = AugmentConfig(crop_size=(48, 36), scale_range=(1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1))
  for seed in range(10):
    img, lab = augment(image, label, np.random.default_rng(seed), cfg)
    assert img.shape == (48, 36, 3) and lab.shape == (48, 36) and lab.dtype == np.int32
    valid = lab != 255
    assert (~valid).any()  # 48 > 30 rows: padded with ignore
    np.testing.assert_array_equal(img[..., 0][valid], lab[valid] * 40.0)


def test_caffe_preprocessing_is_bgr_minus_the_mean_and_pads_with_the_mean():
  image = np.zeros((4, 5, 3), np.uint8)
  image[..., 0], image[..., 1], image[..., 2] = 10, 20, 200      # R, G, B
  cfg = AugmentConfig(crop_size=(6, 5), scale_range=(1.0, 1.0), flip=False, preprocessing="caffe")
  out = normalize(image, cfg)
  np.testing.assert_allclose(out[0, 0], [200 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434],
                             rtol=1e-6)
  img, lab = augment(image, np.zeros((4, 5), np.uint8), np.random.default_rng(0), cfg)
  padded = lab == 255
  assert padded.any()
  assert np.abs(img[padded]).max() <= 0.5   # the padding colour normalises to ~0
  with pytest.raises(ValueError, match="unknown preprocessing 'bgr'"):
    AugmentConfig(preprocessing="bgr")


def test_augment_scales_within_range():
  label = np.zeros((40, 40), np.uint8)
  label[:, 20:] = 1
  cfg = AugmentConfig(crop_size=(100, 100), scale_range=(2.0, 2.0), flip=False)
  _, lab = augment(np.zeros((40, 40, 3), np.uint8), label, np.random.default_rng(0), cfg)
  assert (lab != 255).sum() == 80 * 80
  with pytest.raises(ValueError, match="sizes differ"):
    augment(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.uint8), np.random.default_rng(0), cfg)


def test_train_loader_is_deterministic_resumable_and_sharded():
  """Host batches (no device axis): the same for a step however they are read, resumable,
  every sample once per epoch, processes reading complementary shares. The equality with the
  thread-pool loader it replaced is tests/test_loader.py's."""
  src = SyntheticSource(10, 32, seed=0)
  cfg = AugmentConfig(crop_size=(24, 24))
  make = lambda **kw: TrainLoader(src, global_batch_size=8, seed=5, cfg=cfg, **kw)
  a = make()
  batches = [a.batch(s) for s in range(4)]  # 32 samples: crosses 3 epochs of 10
  assert batches[0]["image"].shape == (8, 24, 24, 3) and batches[0]["image"].dtype == np.float32
  assert batches[0]["label"].shape == (8, 24, 24) and batches[0]["label"].dtype == np.int32
  resumed = make(num_workers=2).iterate(start_step=2)
  for s in (2, 3):
    b = next(resumed)
    np.testing.assert_array_equal(b["image"], batches[s]["image"])
    np.testing.assert_array_equal(b["label"], batches[s]["label"])
  resumed.close()
  assert not np.array_equal(batches[0]["label"], batches[1]["label"])
  # Every sample appears once per epoch.
  order = [a.index(0, p) for p in range(8)] + [a.index(1, p) for p in range(2)]
  assert sorted(order) == list(range(10))
  # Two processes read complementary halves of the global batch.
  parts = [make(process_index=p, process_count=2).batch(1) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), batches[1]["label"])
  with pytest.raises(ValueError, match="must divide"):
    TrainLoader(src, global_batch_size=6, seed=0, cfg=cfg, process_count=4)
  with pytest.raises(ValueError, match="process_index 2"):
    TrainLoader(src, global_batch_size=8, seed=0, cfg=cfg, process_index=2, process_count=2)


def test_training_order_seed_is_separable_from_the_initialisation_seed():
  """train()'s loader follows dataset.order_seed (default: the run's seed)."""
  from ppool_jax.train.config import base_config
  from ppool_jax.train.inputs import train_loader
  cfg = base_config()
  cfg.dataset.name, cfg.dataset.crop_size, cfg.global_batch_size = "synthetic", 24, 4
  cfg.dataset.num_workers = 1
  src = SyntheticSource(12, 32, seed=0)
  labels = lambda c: [train_loader(c, src).batch(s)["label"] for s in range(3)]
  cfg.seed = 0
  seed0 = labels(cfg)
  cfg.seed = 1
  seed1 = labels(cfg)
  assert not np.array_equal(seed0[0], seed1[0])
  cfg.dataset.order_seed = 0  # initialisation seed 1, the data of seed 0
  for a, b in zip(labels(cfg), seed0):
    np.testing.assert_array_equal(a, b)
  cfg.dataset.order_seed = -2
  with pytest.raises(ValueError, match="dataset.order_seed must be -1"):
    train_loader(cfg, src)


def test_eval_batches_pad_with_ignore():
  src = [{"image": np.full((10, 12, 3), 100, np.uint8), "label": np.ones((10, 12), np.uint8)},
         {"image": np.full((8, 14, 3), 100, np.uint8), "label": np.full((8, 14), 2, np.uint8)},
         {"image": np.full((9, 9, 3), 100, np.uint8), "label": np.zeros((9, 9), np.uint8)}]
  cfg = AugmentConfig()
  batches = list(eval_batches(src, num_devices=2, cfg=cfg, multiple=8))
  assert len(batches) == 2
  assert batches[0]["label"].shape == (2, 16, 16)
  assert (batches[0]["label"][0, :10, :12] == 1).all()
  assert (batches[0]["label"][0, 10:] == 255).all()
  assert (batches[1]["label"][1] == 255).all()  # the filler device sees only ignore
  assert (batches[0]["image"][0, 10:] == 0).all()
