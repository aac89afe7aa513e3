"""A second synthetic dataset, ``synthetic_detail``: the detail P-pooling is about.

The first generator (``ppool_jax.data.synthetic``, kept for the demo's numbers) draws hard-edged
shapes on i.i.d. noise. This one draws what the paper's argument (§3, Fig. 2) needs:

* **thin structures narrower than the stride, anti-aliased**: poles (near-vertical, 1.2-3 px
  wide, strong contrast) and wires (any direction, 0.8-1.6 px, weak contrast), drawn with
  their pixel coverage, so a line between two pixel centres is two half-bright pixels;
* **a weak and a strong response in one pooling window**: half of the wires run parallel to a
  pole 2-4 px away (centre to centre), and half of the small objects sit 1-3 px from a large
  blob of the same colour family;
* **boundaries between two foreground classes**: blobs overlap textured regions, and poles,
  wires and small objects cross both;
* **spatially correlated texture and noise**: a smooth colour field, an illumination gradient,
  oriented stripes in the textured regions and band-limited (Gaussian-blurred) noise.

Colour alone does not give a class: poles and wires change the brightness of whatever lies
beneath them (their colour is the background's, lighter or darker), small objects draw their
colour from the blobs' distribution, and texture stripes from the same hues as everything
else. Width, contrast, length and shape decide.

Classes (``CLASSES``): 0 background, 1 blob, 2 pole, 3 texture, 4 wire, 5 small object;
``DETAIL_CLASSES`` = pole, wire, small object. A pixel takes the class of the topmost shape
covering at least half of it (painting order: texture, blob, pole, wire, small object); there
is **no ignore label**: every pixel, boundary pixels included, is scored.

Every foreground class is absent from a share of the scenes (``presence`` gives the multi-label
classification target used for pretraining: which classes a scene contains). Sample ``i``
depends only on ``(seed, i)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CLASSES = ("background", "blob", "pole", "texture", "wire", "small_object")
NUM_CLASSES = len(CLASSES)
BLOB, POLE, TEXTURE, WIRE, SMALL = 1, 2, 3, 4, 5
DETAIL_CLASSES = (POLE, WIRE, SMALL)
# Structure sizes in pixels at the generated resolution (before training-time rescaling).
POLE_WIDTH = (1.2, 3.0)
WIRE_WIDTH = (0.8, 1.6)
SMALL_RADIUS = (1.5, 3.0)
COMPANION_GAP = (2.0, 4.0)     # centre-to-centre distance of a wire beside its pole
NEIGHBOUR_GAP = (1.0, 3.0)     # free pixels between a small object and its blob
MIN_PIXELS = 3                 # a class is "present" in a scene with at least this many pixels


def _counts(rng, probs):
  """How many of a kind: ``probs[k]`` is the probability of ``k``."""
  return int(rng.choice(len(probs), p=probs))


def _blur_noise(rng, shape, sigma, amplitude):
  noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), sigma, mode="wrap")
  return amplitude * noise / (noise.std() + 1e-12)


def _hue(rng, family):
  base = {"bright": (0.82, 0.66, 0.36), "cool": (0.36, 0.72, 0.78),
          "dark": (0.14, 0.18, 0.2)}[family]
  return np.clip(np.asarray(base) + rng.normal(0.0, 0.1, 3), 0.0, 1.0)


def _paint(img, label, cov, colour, cls):
  """Alpha-composite ``colour`` with coverage ``cov``; the class where ``cov >= 0.5``."""
  c = cov[..., None]
  img *= 1.0 - c
  img += c * colour
  label[cov >= 0.5] = cls


def _line_coverage(yy, xx, cy, cx, angle, width, half_length):
  """Coverage of a ``width``-px segment through ``(cy, cx)`` at ``angle`` (from vertical),
  with a one-pixel box filter: ``clip(0.5 + width/2 - distance, 0, min(width, 1))``."""
  dy, dx = np.cos(angle), np.sin(angle)
  along = (yy - cy) * dy + (xx - cx) * dx
  across = np.abs(-(yy - cy) * dx + (xx - cx) * dy)
  cov = np.clip(0.5 + width / 2 - across, 0.0, min(width, 1.0))
  return cov * np.clip(0.5 + half_length - np.abs(along), 0.0, 1.0)


def _ellipse_sd(yy, xx, cy, cx, ry, rx, theta):
  """Approximate signed distance (px, negative inside) to a rotated ellipse."""
  c, s = np.cos(theta), np.sin(theta)
  u = (yy - cy) * c + (xx - cx) * s
  v = -(yy - cy) * s + (xx - cx) * c
  r = np.sqrt((u / ry) ** 2 + (v / rx) ** 2)
  return (r - 1.0) * min(ry, rx)


def _shift_brightness(img, cov, delta):
  """Lighten (``delta > 0``) or darken the image under ``cov``: a line that is the colour of
  what it crosses, ``|delta|`` brighter or darker."""
  img += (cov * delta)[..., None]


def generate_sample(seed: int, index: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
  """One ``(image uint8 (size, size, 3), label uint8 (size, size))`` pair."""
  if size < 32:
    raise ValueError(f"synthetic_detail: size must be >= 32 pixels, got {size}.")
  rng = np.random.default_rng([seed, index, 7])
  yy, xx = np.mgrid[:size, :size].astype(np.float64)
  # Background: a smooth colour field under an illumination gradient.
  # Background: a colour of any brightness (so that poles and wires, which lighten or darken
  # what they cross, make no colour of their own), a smooth colour field and light and shade.
  img = np.broadcast_to(_hue(rng, "dark") + rng.uniform(0.0, 0.55), (size, size, 3)).copy()
  img += np.stack([_blur_noise(rng, (size, size), size / 8, 0.05) for _ in range(3)], -1)
  img += _blur_noise(rng, (size, size), size / 6, 0.1)[..., None]
  label = np.zeros((size, size), np.uint8)
  blobs = []

  for _ in range(_counts(rng, (0.35, 0.45, 0.2))):  # textured regions: oriented stripes
    cy, cx = rng.uniform(0.1, 0.9, 2) * size
    ry, rx = rng.uniform(0.12, 0.3, 2) * size
    sd = _ellipse_sd(yy, xx, cy, cx, ry, rx, rng.uniform(0, np.pi))
    theta, period = rng.uniform(0, np.pi), rng.uniform(3.0, 6.0)
    phase = (yy * np.cos(theta) + xx * np.sin(theta)) / period
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    colour = (_hue(rng, "dark")[None, None] * (1 - stripes[..., None])
              + _hue(rng, rng.choice(["cool", "bright"]))[None, None] * stripes[..., None])
    cov = np.clip(0.5 - sd, 0.0, 1.0)
    img *= 1.0 - cov[..., None]
    img += cov[..., None] * colour
    label[cov >= 0.5] = TEXTURE

  for _ in range(_counts(rng, (0.3, 0.45, 0.25))):  # blobs, shaded, often over a texture
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    ry, rx = rng.uniform(0.1, 0.22, 2) * size
    theta = rng.uniform(0, np.pi)
    sd = _ellipse_sd(yy, xx, cy, cx, ry, rx, theta)
    colour = _hue(rng, "bright")
    shade = 1.0 + 0.15 * ((yy - cy) * rng.normal() + (xx - cx) * rng.normal()) / size
    cov = np.clip(0.5 - sd, 0.0, 1.0)
    img *= 1.0 - cov[..., None]
    img += cov[..., None] * np.clip(colour[None, None] * shade[..., None], 0, 1)
    label[cov >= 0.5] = BLOB
    blobs.append((cy, cx, ry, rx, theta, colour))

  poles = []
  for _ in range(_counts(rng, (0.3, 0.3, 0.25, 0.15))):  # poles: near-vertical, strong
    cx = rng.uniform(0.05, 0.95) * size
    length = rng.uniform(0.3, 0.9) * size
    cy = rng.uniform(length / 2, size - length / 2) if length < size else size / 2
    angle, width = rng.uniform(-0.2, 0.2), rng.uniform(*POLE_WIDTH)
    cov = _line_coverage(yy, xx, cy, cx, angle, width, length / 2)
    _shift_brightness(img, cov, rng.choice([-1, 1]) * rng.uniform(0.3, 0.5))
    label[cov >= 0.5] = POLE
    poles.append((cy, cx, angle, width, length))

  wires = []
  for pole in poles:  # companions: a weak wire parallel to a strong pole, in one window
    if rng.random() < 0.5:
      cy, cx, angle, width, length = pole
      gap = rng.uniform(*COMPANION_GAP) * rng.choice([-1, 1])
      wires.append((cy - gap * np.sin(angle), cx + gap * np.cos(angle), angle,
                    length * rng.uniform(0.5, 1.0)))
  for _ in range(_counts(rng, (0.35, 0.4, 0.25))):  # free wires: long, any direction
    wires.append((rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size,
                  rng.uniform(-np.pi / 2, np.pi / 2), 2.0 * size))
  for cy, cx, angle, length in wires:
    cov = _line_coverage(yy, xx, cy, cx, angle, rng.uniform(*WIRE_WIDTH), length / 2)
    _shift_brightness(img, cov, rng.choice([-1, 1]) * rng.uniform(0.1, 0.2))
    label[cov >= 0.5] = WIRE

  for _ in range(_counts(rng, (0.2, 0.15, 0.2, 0.2, 0.15, 0.1))):  # small objects
    radius = rng.uniform(*SMALL_RADIUS)
    if blobs and rng.random() < 0.5:  # beside a blob, of its colour family
      by, bx, ry, rx, theta, colour = blobs[rng.integers(len(blobs))]
      phi = rng.uniform(0, 2 * np.pi)
      # Outward from the blob along phi, past its outline by the gap plus the radius.
      reach = 1.0 / np.sqrt((np.cos(phi - theta) / ry) ** 2 + (np.sin(phi - theta) / rx) ** 2)
      dist = reach + radius + rng.uniform(*NEIGHBOUR_GAP)
      cy, cx = by + dist * np.cos(phi), bx + dist * np.sin(phi)
      colour = np.clip(colour + rng.normal(0, 0.05, 3), 0, 1)
    else:
      cy, cx = rng.uniform(0.05, 0.95, 2) * size
      colour = _hue(rng, "bright") * rng.uniform(0.7, 1.0)
    sd = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - radius
    _paint(img, label, np.clip(0.5 - sd, 0.0, 1.0), colour, SMALL)

  img *= 1.0 + 0.12 * ((yy - size / 2) * rng.normal() + (xx - size / 2) * rng.normal())[
      ..., None] / size
  img += _blur_noise(rng, (size, size), rng.uniform(0.8, 1.5), rng.uniform(0.03, 0.05))[..., None]
  img += rng.normal(0.0, 0.01, img.shape)
  return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8), label


def presence(label: np.ndarray, num_classes: int = NUM_CLASSES,
             min_pixels: int = MIN_PIXELS) -> np.ndarray:
  """Multi-label classification target of ``(..., H, W)`` labels: ``(..., K)`` float32, 1
  where a class holds at least ``min_pixels`` pixels (the ignore label counts for none)."""
  label = np.asarray(label)
  flat = label.reshape(label.shape[:-2] + (-1,))
  counts = np.stack([(flat == k).sum(-1) for k in range(num_classes)], -1)
  return (counts >= min_pixels).astype(np.float32)


def _runs(mask_rows: np.ndarray) -> list[int]:
  """Lengths of the runs of True along the last axis."""
  out = []
  for row in mask_rows.reshape(-1, mask_rows.shape[-1]):
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    out.extend((edges[1::2] - edges[::2]).tolist())
  return out


def statistics(num: int = 500, size: int = 96, seed: int = 0) -> dict:
  """Measured statistics of ``num`` scenes: per class the share of pixels and of scenes that
  contain it, the horizontal run lengths of pole pixels (their width), the share of
  class-boundary pixels that are scored, and the share of boundary pixels at a detail class."""
  labels = np.stack([generate_sample(seed, i, size)[1] for i in range(num)])
  from ppool_jax.metrics import gt_boundary  # the metric's own definition of a boundary pixel
  diff = np.zeros(labels.shape, bool)
  diff[:, 1:] |= labels[:, 1:] != labels[:, :-1]
  diff[:, :-1] |= labels[:, 1:] != labels[:, :-1]
  diff[:, :, 1:] |= labels[:, :, 1:] != labels[:, :, :-1]
  diff[:, :, :-1] |= labels[:, :, 1:] != labels[:, :, :-1]
  scored = np.asarray(gt_boundary(labels))
  detail = np.isin(labels, DETAIL_CLASSES)
  near_detail = np.zeros_like(detail)
  for dy, dx in ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)):
    near_detail |= np.roll(detail, (dy, dx), axis=(1, 2))
  poles = _runs(labels == POLE)
  return {
      "num": num, "size": size,
      "pixel_share": {c: float((labels == k).mean()) for k, c in enumerate(CLASSES)},
      "scene_share": dict(zip(CLASSES, presence(labels).mean(0).tolist())),
      "pole_width_px": {"median": float(np.median(poles)), "p10": float(np.percentile(poles, 10)),
                        "p90": float(np.percentile(poles, 90))},
      "boundary_pixel_share": float(diff.mean()),
      "boundary_scored": float(scored.sum() / max(diff.sum(), 1)),
      "boundary_at_detail": float((diff & near_detail).sum() / max(diff.sum(), 1)),
  }


def statistics_table(stats: dict) -> str:
  """``statistics`` as the Markdown table of docs/synthetic_detail.md."""
  lines = [f"Measured on {stats['num']} scenes of {stats['size']} px "
           "(`ppool_jax.data.detail.statistics`):", "",
           "| class | share of pixels | share of scenes containing it |", "|---|---|---|"]
  for c in CLASSES:
    lines.append(f"| {c} | {100 * stats['pixel_share'][c]:.2f} % | "
                 f"{100 * stats['scene_share'][c]:.0f} % |")
  w = stats["pole_width_px"]
  lines += ["", f"- pole width (horizontal runs of pole pixels): median {w['median']:.0f} px, "
            f"10-90 % {w['p10']:.0f}-{w['p90']:.0f} px",
            f"- class-boundary pixels: {100 * stats['boundary_pixel_share']:.1f} % of all pixels; "
            f"{100 * stats['boundary_scored']:.1f} % of them scored by the boundary metrics; "
            f"{100 * stats['boundary_at_detail']:.0f} % touch a pole, wire or small object"]
  return "\n".join(lines)
