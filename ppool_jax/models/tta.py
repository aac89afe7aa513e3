"""Inference on any image size: stride padding, sliding windows, multi-scale + flip averaging.

Each function wraps a *logits function* ``f: (B, h, w, 3) -> (B, h, w, K)`` (a segmentation
model applied in eval mode: logits at its input's resolution) into another one, so they
compose: ``tta_logits(pad_to_multiple(f, 32), x, scales=(0.5, 1, 1.5), flip=True)``.

Resizing is bilinear with half-pixel centres and no antialiasing, for images and logits
alike (the convention of mmsegmentation's ``cv2.resize`` / ``F.interpolate(...,
align_corners=False)`` test pipeline). Padding uses zeros, which is the mean colour after
the pipeline's normalisation (``ppool_jax.data.pipeline.normalize``).

``tta_logits`` and ``pad_to_multiple`` are pure ``jax.numpy`` (evaluation runs them inside
``pmap``/``jit``); ``slide_logits`` loops over windows on the host and calls ``f`` on
batches of windows (``f`` may be a jitted, sharded function).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[jax.Array], jax.Array]


def resize_bilinear(x, size: tuple[int, int]) -> jax.Array:
  """``(B, h, w, C) -> (B, *size, C)`` float32, bilinear, half-pixel centres, no antialiasing."""
  if tuple(x.shape[1:3]) == tuple(size):
    return jnp.asarray(x, jnp.float32)
  return jax.image.resize(jnp.asarray(x, jnp.float32), (x.shape[0], *size, x.shape[-1]),
                          "bilinear", antialias=False)


def check_tta(scales: Sequence[float], flip: bool) -> tuple[tuple[float, ...], bool]:
  """``(scales, flip)`` validated: a non-empty sequence of positive, finite scales."""
  scales = tuple(float(s) for s in scales)
  if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
    raise ValueError(f"test-time scales must be a non-empty sequence of positive numbers, "
                     f"got {scales!r}.")
  if not isinstance(flip, (bool, np.bool_)):
    raise ValueError(f"test-time flip must be True or False, got {flip!r}.")
  return scales, bool(flip)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
  """``(round(h * scale), round(w * scale))``, at least 1 pixel each."""
  return tuple(max(1, int(round(n * scale))) for n in size)


def tta_logits(f: LogitsFn, images, scales: Sequence[float] = (1.0,),
               flip: bool = False) -> jax.Array:
  """The mean of ``f``'s logits over ``scales`` x (identity, horizontal flip if ``flip``),
  each resized back to the input's ``(H, W)``: ``(B, H, W, 3) -> (B, H, W, K)`` float32.

  For scale ``s`` the images are resized to :func:`scaled_size`; a flipped pass is flipped
  back before averaging. ``scales=(1.0,), flip=False`` returns ``f(images)`` (as float32).
  Logits, not probabilities, are averaged (as issue #20 asks; mmseg averages softmax).
  """
  scales, flip = check_tta(scales, flip)
  hw = tuple(images.shape[1:3])
  total, n = None, 0
  for s in scales:
    size = scaled_size(hw, s)
    x = images if size == hw else resize_bilinear(images, size)
    for flipped in (False, True) if flip else (False,):
      y = f(x[:, :, ::-1] if flipped else x)
      y = resize_bilinear(y[:, :, ::-1] if flipped else y, hw)
      total, n = (y if total is None else total + y), n + 1
  return total if n == 1 else total / n


def pad_to_multiple(f: LogitsFn, multiple: int) -> LogitsFn:
  """``f`` on the images zero-padded at the bottom/right to multiples of ``multiple`` (a
  model's total stride), its logits cropped back to the input size."""
  if multiple < 1:
    raise ValueError(f"multiple must be >= 1, got {multiple}.")

  def padded(x):
    h, w = x.shape[1:3]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
      x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    return f(x)[:, :h, :w]
  return padded


def window_starts(n: int, window: int, stride: int) -> list[int]:
  """Window offsets covering ``n`` pixels (mmseg's ``slide_inference`` grid): every
  ``stride`` pixels, the last one moved back to end at ``n``; ``[0]`` when ``n <= window``."""
  count = max(n - window + stride - 1, 0) // stride + 1
  return sorted({max(min(i * stride, n - window), 0) for i in range(count)})


def slide_logits(f: LogitsFn, window: tuple[int, int], stride: tuple[int, int],
                 batch_size: int = 8) -> LogitsFn:
  """Sliding-window inference: ``f`` on every ``window``-sized crop (offsets of
  :func:`window_starts`), logits averaged where windows overlap.

  Images smaller than the window are zero-padded to it (and the logits cropped back), so
  every call of ``f`` sees ``(batch_size, *window, 3)``: one compilation for all images and
  sizes (the last batch is padded with copies of its last window). Runs on the host.
  """
  (wh, ww), (sh, sw) = window, stride
  if min(wh, ww, sh, sw, batch_size) < 1:
    raise ValueError(f"window {window}, stride {stride} and batch_size {batch_size} must be "
                     ">= 1.")

  def slide(x):
    x = np.asarray(x, np.float32)
    b, h, w, _ = x.shape
    hp, wp = max(h, wh), max(w, ww)
    x = np.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    boxes = [(i, y, z) for i in range(b) for y in window_starts(hp, wh, sh)
             for z in window_starts(wp, ww, sw)]
    total, count = None, np.zeros((b, hp, wp, 1), np.float32)
    for k in range(0, len(boxes), batch_size):
      chunk = boxes[k:k + batch_size]
      crops = [x[i, y:y + wh, z:z + ww] for i, y, z in chunk]
      crops += [crops[-1]] * (batch_size - len(crops))
      logits = np.asarray(f(np.stack(crops)), np.float32)
      if total is None:
        total = np.zeros((b, hp, wp, logits.shape[-1]), np.float32)
      for (i, y, z), l in zip(chunk, logits):
        total[i, y:y + wh, z:z + ww] += l
        count[i, y:y + wh, z:z + ww] += 1
    return jnp.asarray((total / count)[:, :h, :w])
  return slide
