"""Flax pooling units: the P-pooling unit and every baseline the paper compares against.

Every module has the same construction fields ``(window_shape, strides, padding)``
and call signature ``module(x) -> pooled``, channels-last ``(*batch, *spatial, C)``
as in ``flax.linen.pooling``; :func:`make_pool` builds any of them by name.

Names. ``POOLINGS`` holds the canonical registry names; the model-level ``STRIDED_C``
(``"strided_c"``, no pooling module) completes the names a model's ``pooling`` takes.
``DEPRECATED_POOLING_NAMES`` is the one table of the old names of ``"strided_c"`` and
``"all_c"``, still accepted with a ``DeprecationWarning`` (issue #21 item 5). The names never
reach parameter paths (a model names its pooling layers ``pool<i>`` / ``pool_stage<i>``), so
checkpoints load under either name.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ppool_jax.nn.side_branch import SIDE_BRANCH, DepthwiseConv, PReLU, SideBranch  # noqa: F401
from ppool_jax.ops import compute_dtype, p_pool, window_geometry, window_members
from ppool_jax.ops.windows import Padding, fold, masked


class _Pool(nn.Module):
  window_shape: Sequence[int] = (2, 2)
  strides: Sequence[int] | None = None
  padding: Padding = "VALID"
  # Computation dtype of the convolutions inside a pooling (All-C's); elementwise poolings
  # work in their input's dtype. P-pooling's side branch always runs in float32 (tiny, and
  # alpha near 20 needs more than bfloat16's 8 bits); p_pool computes in float32 anyway.
  dtype: Any = None

  def _members(self, x):
    """Members, masks (None = all valid) and the number of valid members per window."""
    geom = window_geometry(x.shape, self.window_shape, self.strides, self.padding,
                           op_name=type(self).__name__)
    members, masks = window_members(x, geom)
    return members, masks, jnp.asarray(geom.valid_count(), x.dtype)


def _sum(values):
  return fold(jnp.add, values)


def _conv_padding(padding: Padding):
  """Our pooling padding in the form ``nn.Conv`` takes (strings pass, pairs become tuples)."""
  return padding if isinstance(padding, str) else tuple(map(tuple, padding))


class MaxPool(_Pool):
  """Max pooling (``flax.linen.max_pool``)."""

  @nn.compact
  def __call__(self, x):
    return nn.max_pool(x, tuple(self.window_shape), self.strides, self.padding)


class AvgPool(_Pool):
  """Average pooling over real members (padding not counted, matching p_pool at alpha=0)."""

  @nn.compact
  def __call__(self, x):
    return nn.avg_pool(x, tuple(self.window_shape), self.strides, self.padding,
                       count_include_pad=False)


class PPool(_Pool):
  """The P-pooling unit (paper §3.5, Fig. 1): a side branch predicts alpha, then p_pool.

  Attributes:
    clip_max: the C of alpha's range ``(0, C]`` (paper: 35 for VGG). ``None`` leaves alpha
      unbounded above; ``p_pool`` is stable at any alpha, so larger C is fine.
    alpha_min: the open lower end of ``(0, C]`` is realised as ``[alpha_min, C]``.
    bias_init: initial bias of the side branch's last conv (20: starts near max pooling).
    input_scale: the side branch sees ``input_scale * x`` (paper: 100) for faster learning.
    input_norm: ``None`` (paper) or ``"rms"``: the side branch sees
      ``input_scale * x / rms(x)``, the batch's root mean square (a constant for the
      gradient): the same branch input whatever the scale of the activations.
    shift: Eq. 2 for inputs that may be negative: ``"map"`` (or ``True``, the paper's
      feature-map minimum) or ``"window"`` (each window's minimum); see ``p_pool``.
    alpha_param: ``"linear"`` (paper: alpha = clip(branch output)) or ``"log"`` (alpha =
      exp(clip(branch output, log alpha_min, log C)), the branch starting at
      ``log(bias_init)``): an additive step of the branch then scales alpha, so its gradient
      is ``alpha`` times larger at the same loss gradient (an option, not the paper's).

  At initialisation alpha is ``bias_init`` plus a small perturbation (the last conv's
  kernel starts at stddev 1e-3), within ``[19, 21]`` for inputs in ``[0, 1]``. For
  non-negative inputs P-pooling at ``alpha >= 19`` stays within
  ``min_t (1 + (N-1) t^(a+1)) / (1 + (N-1) t^a)`` of the window max: ``y >= 0.969 max``
  for 2x2 windows and ``y >= 0.948 max`` for 3x3, so the unit starts as max pooling
  to within 3% / 5%.
  The alpha map is sown into the ``intermediates`` collection as ``alpha``, and passes
  through ``self.perturb("alpha", ...)``: apply with a zero ``perturbations`` collection of
  the same shapes and ``jax.grad`` w.r.t. it gives ``dL/dalpha`` (what
  ``ppool_jax.train.diagnostics`` logs). ``init`` creates no perturbation (its shapes
  would be the init batch's). Its parameters live under the ``side_branch`` module, which
  :func:`ppool_jax.nn.side_branch_labels` labels for the paper's 3x learning rate.
  """
  clip_max: float | None = 35.0
  alpha_min: float = 1e-4
  bias_init: float = 20.0
  input_scale: float = 100.0
  input_norm: str | None = None
  shift: bool | str = False
  alpha_param: str = "linear"

  @nn.compact
  def __call__(self, x):
    if self.alpha_param not in ("linear", "log"):
      raise ValueError(f"PPool: alpha_param must be 'linear' or 'log', got {self.alpha_param!r}.")
    log = self.alpha_param == "log"
    if log and not self.bias_init > 0:
      raise ValueError(f"PPool: alpha_param='log' needs bias_init > 0, got {self.bias_init}.")
    # In log space the branch starts at log(bias_init) with its kernel scaled so that the
    # initial alpha spread matches the linear branch's (alpha ~ b exp(d / b) ~ b + d).
    raw = SideBranch(self.window_shape, self.strides, self.padding,
                     bias_init=math.log(self.bias_init) if log else self.bias_init,
                     input_scale=self.input_scale, input_norm=self.input_norm,
                     out_kernel_stddev=1e-3 / self.bias_init if log else 1e-3,
                     name=SIDE_BRANCH)(
                         x.astype(compute_dtype(x.dtype)))
    if not self.is_initializing():
      raw = self.perturb("alpha_raw", raw)
    lo = math.log(self.alpha_min) if log else self.alpha_min
    if log:  # no clip_max: exp(80) ~ 5.5e34, max pooling to float32 precision, and finite
      hi = 80.0 if self.clip_max is None else math.log(self.clip_max)
    else:
      hi = self.clip_max
    clipped = jnp.clip(raw, lo, hi)
    alpha = jnp.exp(clipped) if log else clipped
    self.sow("intermediates", "alpha_raw", raw)
    self.sow("intermediates", "clipped", (clipped != raw).astype(jnp.float32))
    self.sow("intermediates", "alpha", alpha)
    if not self.is_initializing():
      alpha = self.perturb("alpha", alpha)
    return p_pool(x, alpha, tuple(self.window_shape), self.strides, self.padding, shift=self.shift)


class PFixedPool(_Pool):
  """P-pooling with one alpha per layer (``per="layer"``) or per channel, no side branch:
  a parameter initialised to ``init_alpha`` (``learn=True``), or the constant ``init_alpha``
  (``learn=False``: a fixed pooling between average (0) and max (large) pooling)."""
  per: str = "channel"
  init_alpha: float = 20.0
  clip_max: float | None = 35.0
  alpha_min: float = 1e-4
  shift: bool | str = False
  learn: bool = True

  @nn.compact
  def __call__(self, x):
    if self.per not in ("layer", "channel"):
      raise ValueError(f"PFixedPool: per must be 'layer' or 'channel', got {self.per!r}.")
    if not (self.init_alpha >= 0 and math.isfinite(self.init_alpha)):
      raise ValueError(f"PFixedPool: init_alpha must be finite and >= 0, got {self.init_alpha}.")
    shape = () if self.per == "layer" else (x.shape[-1],)
    if self.learn:
      alpha = self.param("alpha", nn.initializers.constant(self.init_alpha), shape)
    else:
      alpha = jnp.full(shape, self.init_alpha, jnp.float32)
    alpha = jnp.clip(alpha, self.alpha_min, self.clip_max)
    self.sow("intermediates", "alpha", alpha)
    if not self.is_initializing():
      alpha = self.perturb("alpha", alpha)
    return p_pool(x, alpha, tuple(self.window_shape), self.strides, self.padding, shift=self.shift)


class StridedConvPool(_Pool):
  """A newly initialised ``window``-sized conv with the pooling's stride in its place,
  followed by a ReLU (``activation=False`` leaves it linear).

  The paper's *All-C* (Springenberg et al. 2015): every pooling layer becomes a learned
  strided conv, and in their All-CNN every conv, the replacing ones included, is followed
  by a ReLU. Registered as ``"all_c"``. (The paper's *Strided-C*, moving the stride into the
  preceding conv and dropping the pooling, is a model-level setting: ``pooling="strided_c"``.)
  """
  use_bias: bool = True
  activation: bool = True

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(x.shape[-1], tuple(self.window_shape), strides=self.strides or 1,
                padding=_conv_padding(self.padding), use_bias=self.use_bias, dtype=self.dtype,
                name="conv")(x)
    return nn.relu(y) if self.activation else y


class LpPool(_Pool):
  """Learned-norm pooling (Gulcehre et al. 2014): ``(mean_i |x_i|^p)^(1/p)``, p per channel.

  ``p = 1 + softplus(rho)`` keeps ``p >= 1`` (p = 1: mean of |x|; p -> inf: max |x|).
  Computed relative to the window's max ``|x|`` so large p does not overflow.
  """
  init_p: float = 2.0

  @nn.compact
  def __call__(self, x):
    if self.init_p <= 1.0:
      raise ValueError(f"LpPool: init_p must be > 1, got {self.init_p}.")
    rho0 = math.log(math.expm1(self.init_p - 1.0))  # softplus^-1(p - 1)
    rho = self.param("rho", nn.initializers.constant(rho0), (x.shape[-1],))
    p = 1.0 + jax.nn.softplus(rho)
    members, masks, count = self._members(jnp.abs(x))
    m = masked(members, masks, 0.0)
    top = fold(jnp.maximum, m)
    safe_top = jnp.where(top > 0, top, 1.0)
    powered = [jnp.where(v > 0, jnp.exp(p * jnp.log(jnp.where(v > 0, v, 1.0) / safe_top)), 0.0)
               for v in m]
    mean = _sum(masked(powered, masks, 0.0)) / count
    # The inner where keeps log(0) of all-zero windows out of the gradient.
    mean = jnp.where(top > 0, mean, 1.0)
    return jnp.where(top > 0, top * jnp.exp(jnp.log(mean) / p), 0.0)


class MixedPool(_Pool):
  """Mixed max-average pooling with a fixed ratio (Lee et al. 2016): ``a*max + (1-a)*avg``."""
  ratio: float = 0.5

  @nn.compact
  def __call__(self, x):
    if not 0.0 <= self.ratio <= 1.0:
      raise ValueError(f"MixedPool: ratio must be in [0, 1], got {self.ratio}.")
    mx = MaxPool(self.window_shape, self.strides, self.padding)(x)
    av = AvgPool(self.window_shape, self.strides, self.padding)(x)
    return self.ratio * mx + (1.0 - self.ratio) * av


class GatedPool(_Pool):
  """Gated max-average pooling, "gated, layer-wise" (Lee et al. 2016), as the paper uses it.

  ``g = sigmoid(sum_i omega_i x_i)`` over each window with one ``omega`` (window-shaped)
  shared by all channels of the layer; ``y = g * max + (1 - g) * avg``. ``omega``
  starts at 0, i.e. an even mix.
  """

  @nn.compact
  def __call__(self, x):
    members, masks, _ = self._members(x)
    omega = self.param("omega", nn.initializers.zeros, tuple(self.window_shape))
    flat = omega.reshape(-1)
    gate = jax.nn.sigmoid(_sum([w * v for w, v in zip(flat, masked(members, masks, 0.0))]))
    mx = MaxPool(self.window_shape, self.strides, self.padding)(x)
    av = AvgPool(self.window_shape, self.strides, self.padding)(x)
    return gate * mx + (1.0 - gate) * av


class DPPool(_Pool):
  """Detail-preserving pooling, symmetric "lite" variant (Saeedan et al. 2018).

  ``y = sum_q w_q x_q / sum_q w_q`` with ``w_q = alpha + (sqrt((x_q - xbar)^2 + eps^2))^lam``,
  ``xbar`` the window average (the "lite" guidance image, a box filter instead of a
  learned one), and per-channel ``alpha = softplus(a) >= 0``, ``lam = softplus(l) >= 0``
  (raw parameters start at 0: ``alpha = lam = log 2``).
  """
  eps: float = 1e-3

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    alpha = jax.nn.softplus(self.param("alpha", nn.initializers.zeros, (c,)))
    lam = jax.nn.softplus(self.param("lam", nn.initializers.zeros, (c,)))
    members, masks, count = self._members(x)
    xbar = _sum(masked(members, masks, 0.0)) / count
    weights = [alpha + jnp.exp(lam * 0.5 * jnp.log((v - xbar) ** 2 + self.eps ** 2))
               for v in members]
    weights = masked(weights, masks, 0.0)
    return _sum([w * v for w, v in zip(weights, members)]) / _sum(weights)


class SoftPool(_Pool):
  """SoftPool (Stergiou et al. 2021): ``sum_i softmax(x)_i x_i`` over each window."""

  @nn.compact
  def __call__(self, x):
    members, masks, _ = self._members(x)
    vals = masked(members, masks, -jnp.inf)  # exp(-inf - top) = 0: padding never weighs
    top = fold(jnp.maximum, vals)
    e = [jnp.exp(v - top) for v in vals]
    return _sum([w * v for w, v in zip(e, members)]) / _sum(e)


POOLINGS: dict[str, Callable[..., _Pool]] = {
    "max": MaxPool,
    "avg": AvgPool,
    "p": PPool,
    "p_fixed": PFixedPool,
    "all_c": StridedConvPool,
    "lp": LpPool,
    "gated": GatedPool,
    "mixed": MixedPool,
    "dpp": DPPool,
    "soft": SoftPool,
}


# The paper's Strided-C (Springenberg et al. 2015): no pooling layer, the preceding conv takes
# the stride. A model-level name (``VGG16Backbone``, ``ResNet50Backbone``), not a module.
STRIDED_C = "strided_c"

# The one place old pooling names map to the canonical ones: accepted wherever a pooling name
# is (``make_pool``, a model's ``pooling``, ``pool_options`` keys, configs), with a
# DeprecationWarning. To be removed in a later release.
DEPRECATED_POOLING_NAMES = {"stride_in_conv": STRIDED_C, "strided_conv": "all_c"}


def pooling_names() -> list[str]:
  """Every canonical name a model's ``pooling`` takes: the registry's and ``STRIDED_C``."""
  return sorted([*POOLINGS, STRIDED_C])


def canonical_pooling(name: str, warn: bool = True) -> str:
  """``name``, or the canonical name of a deprecated one (``DEPRECATED_POOLING_NAMES``), with a
  ``DeprecationWarning`` naming both unless ``warn=False``. Unknown names pass through."""
  new = DEPRECATED_POOLING_NAMES.get(name) if isinstance(name, str) else None
  if new is None:
    return name
  if warn:
    warnings.warn(f"pooling name {name!r} is deprecated, use {new!r} (the old name will be "
                  "removed in a later release).", DeprecationWarning, stacklevel=3)
  return new


def canonical_pool_options(options: Mapping[str, Any] | None, warn: bool = True
                           ) -> dict[str, Any] | None:
  """``pool_options`` with deprecated keys renamed (:func:`canonical_pooling`); an old and a
  new key for the same method together are an error."""
  if options is None:
    return None
  out: dict[str, Any] = {}
  for key, value in options.items():
    new = canonical_pooling(key, warn)
    if new in out:
      old = [k for k in options if canonical_pooling(k, warn=False) == new]
      raise ValueError(f"pool_options has both {old[0]!r} and {old[1]!r}, names of the same "
                       f"pooling; keep only {new!r}.")
    out[new] = value
  return out


def canonical_pooling_spec(spec: str, warn: bool = True) -> str:
  """A config's ``model.pooling`` string (one name or comma-separated, one per stage) with
  deprecated names replaced."""
  return ",".join(canonical_pooling(n, warn) for n in spec.split(","))


def make_pool(name: str, /, window_shape: Sequence[int] = (2, 2), strides: Sequence[int] | None = None,
              padding: Padding = "VALID", **kwargs: Any) -> _Pool:
  """Builds the pooling module registered as ``name`` (see ``POOLINGS``).

  ``kwargs`` are the module's own options (e.g. ``clip_max`` for ``"p"``, ``ratio`` for
  ``"mixed"``) and flax's ``name=`` for the submodule. A deprecated name
  (``DEPRECATED_POOLING_NAMES``) builds its canonical one with a ``DeprecationWarning``;
  unknown pooling names raise a ``ValueError`` listing the registered ones.
  """
  name = canonical_pooling(name)
  if name not in POOLINGS:
    hint = (f" ({STRIDED_C!r} is a model-level setting, no pooling module: a model's "
            "pooling=)") if name == STRIDED_C else ""
    raise ValueError(f"unknown pooling {name!r}; registered: {', '.join(sorted(POOLINGS))}."
                     + hint)
  strides = None if strides is None else tuple(strides)
  return POOLINGS[name](window_shape=tuple(window_shape), strides=strides, padding=padding,
                        **kwargs)
