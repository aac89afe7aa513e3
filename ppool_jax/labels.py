"""Label conventions shared by the data pipeline, the metrics and the training step.

A dependency-free module, so that the training step and the metrics need not import the data
pipeline (and with it PIL) for one constant.
"""

IGNORE = 255  # void / "don't care": never trained on, never scored (VOC's 255)

# Cityscapes' 19 train-id colours (cityscapesScripts' labels.py).
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32))


def voc_palette(n: int = 256) -> tuple[tuple[int, int, int], ...]:
  """PASCAL VOC's colour map (its devkit's ``labelcolormap``: the bits of the class id
  spread over the high bits of R, G, B): id 0 black, 1 (128, 0, 0), 2 (0, 128, 0), ...;
  any number of classes (ids 0-255)."""
  out = []
  for k in range(n):
    r = g = b = 0
    c = k
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    out.append((r, g, b))
  return tuple(out)


def palette(dataset: str, num_classes: int, colours=None) -> tuple[tuple[int, int, int], ...]:
  """The colours of ``num_classes`` train ids for label PNGs and overlays: ``colours`` if
  given (a dataset config's palette), Cityscapes' own for ``cityscapes``, else VOC's map."""
  if colours:
    colours = tuple(tuple(int(v) for v in c) for c in colours)
    if len(colours) < num_classes or any(len(c) != 3 or not all(0 <= v <= 255 for v in c)
                                         for c in colours):
      raise ValueError(f"palette: need {num_classes} (R, G, B) colours in 0-255, got "
                       f"{len(colours)}.")
    return colours[:num_classes]
  if dataset == "cityscapes" and num_classes <= len(CITYSCAPES_PALETTE):
    return CITYSCAPES_PALETTE[:num_classes]
  return voc_palette(num_classes)
