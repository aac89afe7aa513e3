"""The ``folder`` dataset (a dataset of one's own from the config), Cityscapes train-id
files, colour labels, and label validation before training (issue #24 items 2 and 5)."""

import os

import numpy as np
import pytest
from PIL import Image

from folder_data import CLASSES, folder_cfg, make_folder, spoil_labels, write_png
from ppool_jax.data import FolderSource
from ppool_jax.data.check import LabelCheckError, check_labels
from ppool_jax.data.custom import folder_spec, label_tables
from ppool_jax.data.folders import ColourLabelError, DatasetError, read_example
from ppool_jax.train import inputs
from ppool_jax.train.runs import IncompatibleRunError, check_compatible, config_to_json


def test_folder_dataset_reads_labels_and_names_its_classes(tmp_path):
  labels = make_folder(tmp_path, nested=True)
  cfg = folder_cfg(tmp_path, palette=((0, 0, 0), (128, 64, 128), (153, 153, 153)))
  assert inputs.num_classes(cfg) == 3 and inputs.class_names(cfg) == CLASSES
  assert inputs.palette(cfg)[1] == (128, 64, 128)
  train, val = inputs.sources(cfg)
  assert len(train) == 4 and len(val) == 2
  assert [e.key for e in train.examples] == ["img_0", "img_2", "sub/img_1", "sub/img_3"]
  for src, split in ((train, "train"), (val, "val")):
    for i, ex in enumerate(src.examples):
      got = src[i]
      np.testing.assert_array_equal(got["label"], labels[(split, ex.key)])
      assert got["image"].shape == (20, 24, 3)


def test_reduce_zero_label_and_a_custom_ignore_index_map_to_the_pipeline_ignore(tmp_path):
  # Raw files: 0 = "other", classes 1..3, 254 marks unlabelled pixels (row 0).
  make_folder(tmp_path, ignore=254, offset=1)
  path = str(tmp_path / "annotations" / "val" / "img_0.png")
  raw = np.asarray(Image.open(path)).copy()
  raw[2, :5] = 0
  write_png(path, raw)
  spec = folder_spec(CLASSES, img_suffix=".png", ignore_index=254, reduce_zero_label=True)
  got = FolderSource(spec, str(tmp_path), "val")[0]["label"]
  expected = np.where((raw == 0) | (raw == 254), 255, raw.astype(int) - 1)
  np.testing.assert_array_equal(got, expected)
  assert (got[0] == 255).all() and (got[2, :5] == 255).all() and got[1, :3].tolist() == [0, 1, 2]
  # Without reduce_zero_label the shifted ids overflow the 3 classes: 3 is out of range.
  with pytest.raises(DatasetError, match=r"img_0.png has ids out of range: \[3\]"):
    FolderSource(folder_spec(CLASSES, img_suffix=".png", ignore_index=254), str(tmp_path),
                 "val")[0]
  # With the default ignore_index (255), 254 is out of range too.
  with pytest.raises(DatasetError, match=r"out of range: \[254\]"):
    FolderSource(folder_spec(CLASSES, img_suffix=".png", reduce_zero_label=True),
                 str(tmp_path), "val")[0]


def test_label_tables():
  table, valid = label_tables(3, ignore_index=7)
  assert table[:3].tolist() == [0, 1, 2] and table[7] == 255 and table[3] == 255
  assert np.flatnonzero(valid).tolist() == [0, 1, 2, 7]
  table, valid = label_tables(3, reduce_zero_label=True)
  assert table[:5].tolist() == [255, 0, 1, 2, 255]
  assert np.flatnonzero(valid).tolist() == [0, 1, 2, 3, 255]
  with pytest.raises(ValueError, match="ignore_index 2 is also the raw id of class 2"):
    label_tables(3, ignore_index=2)
  with pytest.raises(ValueError, match="ignore_index 1 is also the raw id of class 0"):
    label_tables(3, ignore_index=1, reduce_zero_label=True)
  with pytest.raises(ValueError, match="256 classes; between 1 and 255"):
    label_tables(256)
  with pytest.raises(ValueError, match="classes is empty"):
    folder_spec(())
  with pytest.raises(ValueError, match="repeated class names"):
    folder_spec(("a", "b", "a"))
  with pytest.raises(ValueError, match="one \\(r, g, b\\) colour .* per class \\(3\\)"):
    folder_spec(CLASSES, palette=((0, 0, 0), (1, 1, 1)))
  with pytest.raises(ValueError, match="palette"):
    folder_spec(CLASSES, palette=((0, 0, 0), (1, 1, 1), (1, 1, 300)))


def test_split_files_select_the_examples(tmp_path):
  labels = make_folder(tmp_path, splits=(("all", 5),))
  os.makedirs(tmp_path / "splits")
  (tmp_path / "splits" / "train.txt").write_text("img_0\nimg_3\n\nimg_4\n")
  (tmp_path / "splits" / "val.txt").write_text("img_1\n")
  cfg = folder_cfg(tmp_path, img_dir="images/all", ann_dir="annotations/all",
             split_file="splits/{split}.txt")
  train, val = inputs.sources(cfg)
  assert [e.key for e in train.examples] == ["img_0", "img_3", "img_4"]
  np.testing.assert_array_equal(val[0]["label"], labels[("all", "img_1")])
  cfg.dataset.eval_split = "test"
  with pytest.raises(DatasetError, match=r"split_file not found: .*splits/test.txt"):
    inputs.sources(cfg)


def test_folder_errors_name_the_paths(tmp_path):
  make_folder(tmp_path)
  with pytest.raises(DatasetError, match=r"folder \(train\): img_dir not found: .*images/trainid"):
    inputs.sources(folder_cfg(tmp_path, img_dir="images/{split}id"))
  with pytest.raises(DatasetError, match=r"no \*\.jpg image under .*images/train"):
    FolderSource(folder_spec(CLASSES), str(tmp_path), "train")
  os.remove(tmp_path / "annotations" / "val" / "img_1.png")
  with pytest.raises(DatasetError, match=r"1 files of 2 examples not found .*\n  "
                                         r".*annotations/val/img_1.png"):
    inputs.sources(folder_cfg(tmp_path))
  with pytest.raises(DatasetError, match=r"contain no \{split\}.*'train' and eval_split 'val'"):
    inputs.sources(folder_cfg(tmp_path, img_dir="images/train", ann_dir="annotations/train"))
  cfg = folder_cfg(tmp_path)
  cfg.dataset.reader = "tfds"
  with pytest.raises(ValueError, match="reads its files directly: set dataset.reader='folder'"):
    inputs.sources(cfg)
  cfg.dataset.name = "mine"
  with pytest.raises(ValueError, match="unknown dataset 'mine'; choose from ade20k, cityscapes, "
                                       "folder, synthetic, synthetic_detail, voc_aug"):
    inputs.num_classes(cfg)


def test_cityscapes_reads_train_id_files(tmp_path):
  root = tmp_path
  rng = np.random.default_rng(0)
  for city, kind in (("aachen", "labelTrainIds"), ("bochum", "labelIds")):
    stem = f"{city}_000000_000019"
    write_png(str(root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png"),
         np.zeros((8, 8, 3), np.uint8))
    lab = rng.integers(0, 19, (8, 8)).astype(np.uint8)
    lab[0] = 255
    if kind == "labelIds":
      lab = np.full((8, 8), 26, np.uint8)  # car
    write_png(str(root / "gtFine" / "train" / city / f"{stem}_gtFine_{kind}.png"), lab)
  src = FolderSource("cityscapes", str(root), "train")
  trained = np.asarray(Image.open(root / "gtFine" / "train" / "aachen" /
                                  "aachen_000000_000019_gtFine_labelTrainIds.png"))
  np.testing.assert_array_equal(src[0]["label"], trained)          # train ids as they are
  assert (src[1]["label"] == 13).all()                             # label id 26 -> car (13)
  bad = trained.copy()
  bad[1, 1] = 19                                                   # not a train id
  write_png(str(root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"),
       bad)
  with pytest.raises(DatasetError, match=r"labelTrainIds.png has ids out of range: \[19\]"):
    src[0]


def test_colour_labels_are_rejected_as_such_and_palette_labels_read(tmp_path):
  make_folder(tmp_path)
  spec = folder_spec(CLASSES, img_suffix=".png")
  path = str(tmp_path / "annotations" / "val" / "img_0.png")
  lab = np.asarray(Image.open(path))
  pal = Image.fromarray(lab, "L").convert("P")
  pal.putpalette([0, 0, 0, 128, 64, 128, 153, 153, 153] + [255, 255, 255] * 253)
  pal.save(path)
  assert Image.open(path).mode == "P"
  np.testing.assert_array_equal(FolderSource(spec, str(tmp_path), "val")[0]["label"], lab)
  colours = np.array([[0, 0, 0], [128, 64, 128], [153, 153, 153]] + [[9, 9, 9]] * 253, np.uint8)
  write_png(path, colours[lab])
  with pytest.raises(ColourLabelError, match=r"img_0.png is a colour \(RGB\) image.*greyscale "
                                             r"\('L'\) or palette \('P'\) PNG.*map each colour"):
    FolderSource(spec, str(tmp_path), "val")[0]
  write_png(path, np.stack([lab] * 3, -1))
  with pytest.raises(ColourLabelError, match="three channels are equal: keep one"):
    read_example(FolderSource(spec, str(tmp_path), "val").examples[0], spec)
  write_png(path, np.stack([lab, lab], -1), "LA")
  with pytest.raises(DatasetError, match="img_0.png has mode 'LA'; labels must be single-channel"):
    FolderSource(spec, str(tmp_path), "val")[0]
  wide = lab.astype(np.uint16)
  wide[3, 3] = 300                                   # 16-bit PNG: ids, 300 out of range
  Image.fromarray(wide).save(path)
  with pytest.raises(DatasetError, match=r"img_0.png has ids out of range: \[300\]"):
    FolderSource(spec, str(tmp_path), "val")[0]
  wide[3, 3] = 2
  Image.fromarray(wide).save(path)
  np.testing.assert_array_equal(FolderSource(spec, str(tmp_path), "val")[0]["label"], lab)


def test_label_check_reports_every_problem_with_its_files(tmp_path):
  make_folder(tmp_path)
  spoil_labels(str(tmp_path))
  cfg = folder_cfg(tmp_path)
  train, _ = inputs.sources(cfg, check=False)
  report = check_labels(train, "train", num_workers=2)
  assert report.bad_files == 4 and report.num_files == 4
  assert sorted(report.out_of_range) == [7, 9]
  assert [os.path.basename(p) for p in report.out_of_range[7]] == ["img_0.png", "img_2.png"]
  assert [os.path.basename(p) for p in report.colour] == ["img_1.png"]
  assert len(report.unreadable) == 1 and "img_3.png" in report.unreadable[0]
  assert report.valid_ids == "0..2, 255"
  with pytest.raises(LabelCheckError) as e:   # training's up-front check: both splits at once
    inputs.sources(cfg)
  msg = str(e.value)
  for needle in ("folder/train: 4 of 4 files", "allowed: 0..2, 255", "id 7 in 2 files",
                 "train/img_0.png", "train/img_2.png", "id 9 in 1 file", "colour (RGB)",
                 "train/img_1.png", "img_3.png", "folder/val: 1 of 2 files",
                 "is 24x20 but", "val/img_1.png is 10x10"):
    assert needle in msg, (needle, msg)
  cfg.dataset.check_labels = 0                 # off
  inputs.sources(cfg)
  cfg.dataset.check_labels = 3                 # train (4 images) too large: val only
  with pytest.raises(LabelCheckError) as e:
    inputs.sources(cfg)
  assert "folder/val" in str(e.value) and "folder/train" not in str(e.value)


def test_label_check_counts_pixels_per_class(tmp_path):
  make_folder(tmp_path, splits=(("train", 2), ("val", 1)))
  lab = np.zeros((20, 24), np.uint8)
  lab[0] = 255
  lab[5:] = 1
  write_png(str(tmp_path / "annotations" / "val" / "img_0.png"), lab)
  _, val = inputs.sources(folder_cfg(tmp_path), check=False)
  report = check_labels(val, "val")
  assert report.problems() == [] and report.pixels.tolist() == [4 * 24, 15 * 24, 0, 24]
  assert report.absent_classes() == ["pole"]


def test_fields_added_since_a_run_started_resume_at_their_default(tmp_path, tiny_cfg):
  cfg = tiny_cfg
  stored = config_to_json(cfg)
  del stored["dataset"]["folder"], stored["dataset"]["check_labels"]
  check_compatible(str(tmp_path), stored, cfg)
  cfg.dataset.folder.reduce_zero_label = True
  with pytest.raises(IncompatibleRunError, match=r"dataset.folder.reduce_zero_label <missing> "
                                                 r"-> True"):
    check_compatible(str(tmp_path), stored, cfg)
