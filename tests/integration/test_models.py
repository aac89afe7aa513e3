"""Segmentation models: shapes, output strides, parameter counts, every pooling in every
slot, and the torchvision weight converter against an independent lax reference."""

import math
import os
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from ppool_jax import convert
from ppool_jax.models import (MODELS, OUTPUT_STRIDES, DeepLabLargeFOV, DeepLabV3, FCN8s,
                              ResNet50Backbone, ResNet50Seg,
                              VGG16Backbone, VGG16Seg, build_model, count_params)
from ppool_jax.models.common import stage_poolings
from ppool_jax.nn import DEPRECATED_POOLING_NAMES, POOLINGS, STRIDED_C, make_pool

TINY = 0.0625  # width multiplier: 4-channel VGG stages keep CI fast


def _init(model, x, train=False):
  return model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x,
                    train=train)


# -- shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [(32, 32), (48, 40), (64, 96)])
def test_logits_at_input_size(name, size):
  model = build_model(name, num_classes=5, width=TINY)
  x = jnp.zeros((2,) + size + (3,))
  variables = jax.eval_shape(lambda: _init(model, x))
  out = jax.eval_shape(lambda v: model.apply(v, x), variables)
  chex.assert_shape(out, (2,) + size + (5,))


@pytest.mark.parametrize("h, w", [(32, 32), (48, 40), (64, 96)])
def test_output_strides(h, w):
  x = jnp.zeros((1, h, w, 3))
  cases = [(VGG16Backbone(width=TINY), 16, lambda y: y["out"]),
           (VGG16Backbone(width=TINY, output_stride=32), 32, lambda y: y["out"]),
           (VGG16Backbone(width=TINY), 8, lambda y: y["pool3"]),
           (ResNet50Backbone(width=TINY), 32, lambda y: y["out"]),
           (ResNet50Backbone(width=TINY, output_stride=16), 16, lambda y: y["out"]),
           (ResNet50Backbone(width=TINY, pooling="strided_c"), 32, lambda y: y["out"])]
  for module, stride, pick in cases:
    v = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))
    out = pick(jax.eval_shape(lambda v: module.apply(v, x), v))
    assert out.shape[1:3] == (math.ceil(h / stride), math.ceil(w / stride)), (module, stride)
  assert OUTPUT_STRIDES["resnet50_seg"] == 32


def test_parameter_counts_match_published_architectures():
  x = jnp.zeros((1, 64, 64, 3))
  vgg = jax.eval_shape(lambda: VGG16Backbone().init(jax.random.PRNGKey(0), x))
  r50 = jax.eval_shape(lambda: ResNet50Backbone().init(jax.random.PRNGKey(0), x))
  assert count_params(vgg["params"]) == 14_714_688   # 14.71M
  assert count_params(r50["params"]) == 23_508_032   # 23.51M (without fc)
  # P-pooling side branches add little: < 0.2% of VGG16's conv parameters.
  vgg_p = jax.eval_shape(lambda: VGG16Backbone(pooling="p").init(jax.random.PRNGKey(0), x))
  extra = count_params(vgg_p["params"]) - 14_714_688
  assert extra > 0
  assert extra / 14_714_688 < 0.002


def test_frozen_backbone_bn_but_new_aspp_bn_trains():
  model = DeepLabV3(num_classes=3, width=TINY, frozen_bn=True)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 48, 48, 3))
  variables = _init(model, x)
  _, new = model.apply(variables, x, train=True, mutable=["batch_stats"],
                       rngs={"dropout": jax.random.PRNGKey(4)})
  old = variables["batch_stats"]
  changed = lambda a, b: any(bool(jnp.any(p != q)) for p, q in
                             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
  assert not changed(new["batch_stats"]["backbone"], old["backbone"])
  assert changed(new["batch_stats"]["aspp"]["bn_project"], old["aspp"]["bn_project"])


def test_bad_pooling_config_is_an_error():
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="needs 5 entries"):
    VGG16Backbone(pooling=("p", "max")).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="unknown pooling 'maxx'"):
    ResNet50Backbone(pooling="maxx").init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="unknown model"):
    build_model("unet", 3)


_ALL_POOLINGS = sorted(POOLINGS) + ["strided_c"]
# ResNet-50-seg's 4 pooling slots: three mixes that put every pooling into the model at least
# once and each into more than one slot position (a whole compile per pooling, as VGG16-seg
# gets below, took 8 CPU-minutes of the suite for what the mixes also check).
_RESNET_MIXES = [tuple((_ALL_POOLINGS * 2)[i:i + 4]) for i in (0, 4, 8)]


# -- train step -------------------------------------------------------------------------------

@pytest.mark.parametrize("pooling, model",
                         [(p, "vgg16_seg") for p in _ALL_POOLINGS]
                         + [pytest.param(m, "resnet50_seg", id=",".join(m) + "-resnet50_seg")
                            for m in _RESNET_MIXES])
def test_one_step(pooling, model):
  """Every registry pooling (and Strided-C) trains one jit'd step: in every slot of
  VGG16-seg, and in mixed per-stage assignments of ResNet-50-seg."""
  net = build_model(model, num_classes=3, width=TINY, pooling=pooling)
  x = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 32, 3))
  y = jax.random.randint(jax.random.PRNGKey(3), (2, 32, 32), 0, 3)
  variables = _init(net, x)
  params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  tx = optax.sgd(0.1, momentum=0.9)
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt):
    def loss_fn(p):
      logits, new_state = net.apply({"params": p, **state}, x, train=True,
                                    mutable=list(state.keys()) + ["intermediates"],
                                    rngs={"dropout": jax.random.PRNGKey(4)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state
    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), loss, grads

  new_params, loss, grads = step(params, state, opt)
  assert np.isfinite(float(loss))
  chex.assert_tree_all_finite(grads)
  moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), params, new_params)
  first_conv = "conv1_1" if model.startswith("vgg") else "conv1"
  assert all(jax.tree_util.tree_leaves(moved["backbone"][first_conv]))


# -- converter --------------------------------------------------------------------------------
def torchvision_vgg16_state_dict(rng, classifier=True):
  """Names and shapes of torchvision.models.vgg16().state_dict(), random values
  (``classifier=False``: the features only, as a features-only checkpoint has)."""
  sd, c_in, idx = {}, 3, 0
  for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
    if v == "M":
      idx += 1
      continue
    sd[f"features.{idx}.weight"] = rng.normal(0, math.sqrt(2 / (9 * c_in)), (v, c_in, 3, 3))
    sd[f"features.{idx}.bias"] = rng.normal(0, 0.1, (v,))
    c_in, idx = v, idx + 2  # conv + ReLU
  for i, (o, n) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
    if classifier:
      sd[f"classifier.{i}.weight"] = rng.standard_normal((o, n), np.float32) * np.float32(
          math.sqrt(2 / n))
      sd[f"classifier.{i}.bias"] = rng.normal(0, 0.1, (o,))
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def torchvision_resnet50_state_dict(rng):
  """Names and shapes of torchvision.models.resnet50().state_dict(), random values."""
  sd = {}

  def conv(name, o, i, k):
    sd[f"{name}.weight"] = rng.normal(0, math.sqrt(2 / (k * k * i)), (o, i, k, k))

  def bn(name, c):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, (c,))
    sd[f"{name}.bias"] = rng.normal(0, 0.1, (c,))
    sd[f"{name}.running_mean"] = rng.normal(0, 0.1, (c,))
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, (c,))
    sd[f"{name}.num_batches_tracked"] = np.array(100)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  inplanes = 64
  for li, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], 1):
    for b in range(blocks):
      p = f"layer{li}.{b}"
      conv(f"{p}.conv1", planes, inplanes, 1)
      bn(f"{p}.bn1", planes)
      conv(f"{p}.conv2", planes, planes, 3)
      bn(f"{p}.bn2", planes)
      conv(f"{p}.conv3", planes * 4, planes, 1)
      bn(f"{p}.bn3", planes * 4)
      if b == 0:
        conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
        bn(f"{p}.downsample.1", planes * 4)
      inplanes = planes * 4
  sd["fc.weight"] = np.zeros((1000, 2048))
  sd["fc.bias"] = np.zeros((1000,))
  return {k: np.asarray(v, np.float32) if v.dtype != np.int64 else v for k, v in sd.items()}


def _conv_oihw(x, w, stride=1, padding=0, bias=None):
  """Reference conv with torch-layout weights (NHWC activations, OIHW kernels)."""
  y = lax.conv_general_dilated(x, jnp.asarray(w), (stride, stride), [(padding, padding)] * 2,
                               dimension_numbers=("NHWC", "OIHW", "NHWC"),
                               precision=lax.Precision.HIGHEST)
  return y if bias is None else y + bias


def _bn_eval(x, sd, name, eps=1e-5):
  return ((x - sd[f"{name}.running_mean"]) / np.sqrt(sd[f"{name}.running_var"] + eps)
          * sd[f"{name}.weight"] + sd[f"{name}.bias"])


def reference_vgg16_features(sd, x):
  """torchvision vgg16.features with pool5 made 3x3 stride 1 (our output stride 16)."""
  idx = 0
  for b, n in enumerate([2, 2, 3, 3, 3], 1):
    for _ in range(n):
      x = jax.nn.relu(_conv_oihw(x, sd[f"features.{idx}.weight"], padding=1,
                                 bias=sd[f"features.{idx}.bias"]))
      idx += 2
    if b < 5:
      x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    else:
      x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
    idx += 1
  return x


def reference_resnet50_features(sd, x):
  """torchvision resnet50 up to layer4 (eval mode), written from its definition."""
  x = jax.nn.relu(_bn_eval(_conv_oihw(x, sd["conv1.weight"], 2, 3), sd, "bn1"))
  x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                        [(0, 0), (1, 1), (1, 1), (0, 0)])
  for li, blocks in enumerate([3, 4, 6, 3], 1):
    for b in range(blocks):
      p = f"layer{li}.{b}"
      stride = 2 if (b == 0 and li > 1) else 1
      h = jax.nn.relu(_bn_eval(_conv_oihw(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
      h = jax.nn.relu(_bn_eval(_conv_oihw(h, sd[f"{p}.conv2.weight"], stride, 1), sd, f"{p}.bn2"))
      h = _bn_eval(_conv_oihw(h, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
      if b == 0:
        x = _bn_eval(_conv_oihw(x, sd[f"{p}.downsample.0.weight"], stride), sd, f"{p}.downsample.1")
      x = jax.nn.relu(h + x)
  return x


def test_vgg16_safetensors_to_orbax_and_features(tmp_path):
  from safetensors.numpy import save_file
  sd = torchvision_vgg16_state_dict(np.random.default_rng(0), classifier=False)
  path = str(tmp_path)
  save_file(sd, f"{path}/vgg16.safetensors")
  # The CLI, as a user runs it.
  subprocess.run([sys.executable, "-m", "ppool_jax.convert", "--arch", "vgg16", "--input",
                  f"{path}/vgg16.safetensors", "--output", f"{path}/ckpt"], check=True)
  restored = convert.restore(f"{path}/ckpt")
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 32, 3))
  ours = VGG16Backbone().apply({"params": restored["params"]}, x)["out"]
  ref = reference_vgg16_features(sd, x)
  np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-3 * float(jnp.abs(ref).max()))


def test_resnet50_features_and_merge_into_segmentation_model():
  sd = torchvision_resnet50_state_dict(np.random.default_rng(1))
  converted = convert.convert_state_dict("resnet50", sd)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 32, 3))
  # "strided_c" everywhere is the vanilla torchvision network.
  ours = ResNet50Backbone(pooling="strided_c").apply(converted, x)["out"]
  ref = reference_resnet50_features(sd, x)
  np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=2e-3 * float(jnp.abs(ref).max()))
  # Into a P-pooling ResNet50Seg: backbone convs replaced, side branches kept.
  model = ResNet50Seg(num_classes=21, pooling="p")
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  variables = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  merged = convert.merge_backbone(variables, converted)
  np.testing.assert_array_equal(merged["params"]["backbone"]["layer3_2"]["conv2"]["kernel"],
                                np.transpose(sd["layer3.2.conv2.weight"], (2, 3, 1, 0)))
  np.testing.assert_array_equal(merged["batch_stats"]["backbone"]["bn1"]["var"],
                                sd["bn1.running_var"])
  np.testing.assert_array_equal(
      merged["params"]["backbone"]["pool_stage2"]["side_branch"]["conv_alpha"]["bias"], 0.0)


def test_fc6_fc7_convert_for_fcn8s_and_deeplab_largefov():
  sd = torchvision_vgg16_state_dict(np.random.default_rng(2))
  converted = convert.convert_state_dict("vgg16", sd)
  x = jax.random.uniform(jax.random.PRNGKey(5), (1, 224, 224, 3), minval=-1.0, maxval=1.0)
  model = FCN8s(num_classes=21)
  variables = jax.eval_shape(lambda: _init(model, x))
  variables = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
  merged = convert.merge_pretrained(variables, converted, "fcn8s")
  # merge_backbone takes the same checkpoint (it has a "heads" collection) and loads its backbone
  # alone: fc6/fc7 keep their initialisation (issue #21: it raised ConversionError).
  backbone_only = convert.merge_backbone(variables, converted)
  chex.assert_trees_all_equal(backbone_only["params"]["backbone"], merged["params"]["backbone"])
  chex.assert_trees_all_equal(backbone_only["params"]["fc7"], variables["params"]["fc7"])
  assert np.abs(np.asarray(merged["params"]["fc7"]["kernel"])).max() > 0
  _, inter = model.apply(merged, x, capture_intermediates=True)
  inter = inter["intermediates"]
  pool5 = np.asarray(inter["backbone"]["__call__"][0]["out"], np.float64)[0]   # (7, 7, 512)
  fc7 = np.maximum(np.asarray(inter["fc7"]["__call__"][0], np.float64)[0, 3, 3], 0)
  # torchvision: classifier[0:5] (Linear, ReLU, Dropout, Linear, ReLU; eval) on the
  # (C, H, W)-flattened output of the standard 2x2 stride-2 pool5.
  flat = pool5.transpose(2, 0, 1).reshape(-1)
  w0, b0, w3, b3 = (sd[k].astype(np.float64) for k in convert._VGG16_FC)
  ref = np.maximum(w3 @ np.maximum(w0 @ flat + b0, 0) + b3, 0)
  assert np.abs(ref).max() > 0.1
  np.testing.assert_allclose(fc7, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
  # DeepLab-LargeFOV: the decimated tensors (spatial taps 0, 3, 6; channels 0::4).
  large = convert.merge_pretrained(
      jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
          lambda: _init(DeepLabLargeFOV(num_classes=21), x))), converted, "deeplab_largefov")
  w6 = sd["classifier.0.weight"].reshape(4096, 512, 7, 7)
  np.testing.assert_array_equal(large["params"]["fc6"]["kernel"],
                                w6[0::4][:, :, [0, 3, 6]][:, :, :, [0, 3, 6]].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(large["params"]["fc7"]["kernel"][0, 0],
                                sd["classifier.3.weight"][0::4, 0::4].T)
  np.testing.assert_array_equal(large["params"]["fc6"]["bias"], sd["classifier.0.bias"][0::4])
  chex.assert_shape(large["params"]["fc6"]["kernel"], (3, 3, 512, 1024))


def test_mismatches_are_listed():
  sd = torchvision_vgg16_state_dict(np.random.default_rng(0), classifier=False)
  sd["features.40.weight"] = np.zeros((3,), np.float32)
  del sd["features.28.bias"]
  sd["features.0.weight"] = np.zeros((64, 4, 3, 3), np.float32)
  with pytest.raises(convert.ConversionError,
                     match=r"unexpected tensors: features.40.weight \| missing tensors: "
                           r"features.28.bias \| misshaped tensors: features.0.weight: got "
                           r"\(64, 4, 3, 3\), expected \(3, 3, 3, 64\)"):
    convert.convert_state_dict("vgg16", sd)
  with pytest.raises(FileNotFoundError, match="weights file not found"):
    convert.load_state_dict("/nonexistent/vgg16.pth")


def test_cli_errors_are_one_line_messages(tmp_path):
  from safetensors.numpy import save_file
  path = str(tmp_path)
  sd = torchvision_vgg16_state_dict(np.random.default_rng(0), classifier=False)
  del sd["features.28.bias"]
  save_file(sd, f"{path}/bad.safetensors")
  os.makedirs(f"{path}/exists")
  cli = lambda *a: subprocess.run([sys.executable, "-m", "ppool_jax.convert", "--arch", "vgg16",
                                   *a], capture_output=True, text=True)
  for args, msg in [(("--input", f"{path}/bad.safetensors", "--output", f"{path}/o1"),
                     "missing tensors: features.28.bias"),
                    (("--input", f"{path}/none.safetensors", "--output", f"{path}/o2"),
                     "weights file not found"),
                    (("--input", f"{path}/bad.safetensors", "--output", f"{path}/exists"),
                     "already exists")]:
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
  # The output folder is checked before any work: an existing one is left untouched.
  assert os.listdir(f"{path}/exists") == []
  r = cli("--input", f"{path}/bad.safetensors", "--output", f"{path}/o3", "--verbose")
  assert r.returncode != 0
  assert "Traceback" in r.stderr


def test_pth_via_torch_when_installed(tmp_path):
  torch = pytest.importorskip("torch")
  sd = torchvision_vgg16_state_dict(np.random.default_rng(0), classifier=False)
  path = str(tmp_path / "vgg16.pth")
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
  loaded = convert.load_state_dict(path)
  np.testing.assert_array_equal(loaded["features.0.weight"], sd["features.0.weight"])


# -- pooling names (issue #21 item 5) --------------------------------------------------------

def _variables_and_logits(model, x):
  variables = _init(model, x)
  return variables, model.apply(variables, x)


@pytest.mark.parametrize("model,old,new", [
    ("vgg16_seg", "stride_in_conv", "strided_c"),
    ("vgg16_seg", "strided_conv", "all_c"),
    ("resnet50_seg", "stride_in_conv", "strided_c"),
    ("vgg16_seg", "max,strided_conv,max,stride_in_conv,max", "max,all_c,max,strided_c,max"),
    ("resnet50_seg", ("stride_in_conv", "p", "strided_conv", "max"),
     ("strided_c", "p", "all_c", "max"))])
def test_old_pooling_names_build_the_same_model_with_a_deprecation_warning(model, old, new):
  """A deprecated name (alone, per stage, in a config's comma list) is its new name: the same
  parameter tree (paths, shapes, initial values: checkpoints load under either name) and the
  same logits, with a DeprecationWarning naming both names."""
  x = jax.random.uniform(jax.random.PRNGKey(5), (1, 32, 32, 3))
  split = lambda p: tuple(p.split(",")) if isinstance(p, str) and "," in p else p
  with warnings.catch_warnings():
    warnings.simplefilter("error")                   # the new names warn about nothing
    v_new, y_new = _variables_and_logits(build_model(model, 3, width=TINY, pooling=split(new)),
                                         x)
  with pytest.warns(DeprecationWarning) as record:
    v_old, y_old = _variables_and_logits(build_model(model, 3, width=TINY, pooling=split(old)),
                                         x)
  messages = {str(w.message) for w in record if issubclass(w.category, DeprecationWarning)}
  for o, n in DEPRECATED_POOLING_NAMES.items():
    if o in str(old):
      assert any(f"{o!r}" in m and f"{n!r}" in m for m in messages), messages
  assert jax.tree_util.tree_structure(v_old) == jax.tree_util.tree_structure(v_new)
  chex.assert_trees_all_equal(v_old, v_new)
  np.testing.assert_array_equal(y_old, y_new)


def test_old_names_in_make_pool_pool_options_and_the_constant():
  x = jax.random.uniform(jax.random.PRNGKey(6), (1, 8, 8, 4))
  with pytest.warns(DeprecationWarning, match="'strided_conv' is deprecated, use 'all_c'"):
    old = make_pool("strided_conv", (2, 2), (2, 2))
  new = make_pool("all_c", (2, 2), (2, 2))
  assert type(old) is type(new)
  chex.assert_trees_all_equal(old.init(jax.random.PRNGKey(0), x), new.init(jax.random.PRNGKey(0), x))
  # pool_options keyed by the old name reach the layers (no bias: a different parameter tree).
  tree = lambda opts: jax.tree_util.tree_structure(jax.eval_shape(lambda: _init(
      VGG16Seg(num_classes=3, pooling="all_c", width=TINY, pool_options=opts),
      jnp.zeros((1, 32, 32, 3)))))
  with pytest.warns(DeprecationWarning, match="'strided_conv'.*'all_c'"):
    old_opts = tree({"strided_conv": {"use_bias": False}})
  assert old_opts == tree({"all_c": {"use_bias": False}}) != tree(None)
  with pytest.raises(ValueError, match="both 'strided_conv' and 'all_c'"), warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    tree({"strided_conv": {}, "all_c": {}})
  with pytest.warns(DeprecationWarning, match="STRIDE_IN_CONV is deprecated, use STRIDED_C"):
    from ppool_jax.models import STRIDE_IN_CONV
  assert STRIDE_IN_CONV == STRIDED_C == "strided_c"


def test_unknown_pooling_error_lists_the_canonical_names():
  with pytest.raises(ValueError) as e:
    stage_poolings("maxx", 5, "VGG16Backbone")
  listed = str(e.value).split("choose from ")[1].rstrip(".").split(", ")
  assert listed == sorted([*POOLINGS, "strided_c"]) and "all_c" in listed
  with pytest.raises(ValueError, match="registered: all_c, avg, dpp") as e:
    make_pool("maxx")
  assert "stride_in_conv" not in str(e.value) and "strided_conv" not in str(e.value)
  with pytest.raises(ValueError, match="'strided_c' is a model-level setting"):
    make_pool("strided_c")


# -- OUTPUT_STRIDES (issue #21 item 5) -------------------------------------------------------

def _feature_sizes(model, size: int) -> dict:
  """``{module path: spatial side}`` of every module output of ``model`` on a ``size``-square
  image (traced only: ``jax.eval_shape``)."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: _init(model, x), x)
  _, state = jax.eval_shape(lambda v, x: model.apply(
      v, x, capture_intermediates=True, mutable=["intermediates"]), variables, x)
  leaves = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
  return {jax.tree_util.keystr(p): a.shape[1] for p, a in leaves if len(a.shape) == 4}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_stride_is_the_deepest_downsampling(name):
  """OUTPUT_STRIDES[name] is the stride of the model's deepest features, measured from the
  model: every output that scales with the image (the ASPP's 1x1 image pooling does not) has
  stride image / side; at an image a multiple of the output stride every feature map covers
  it exactly (side * stride == image, no rounding) and the logits are at the image size."""
  model = build_model(name, num_classes=3, width=TINY)
  small, large = _feature_sizes(model, 64), _feature_sizes(model, 128)  # multiples of 32
  strides = {k: 64 // small[k] for k in small if large[k] == 2 * small[k]}
  assert max(strides.values()) == OUTPUT_STRIDES[name], strides
  size = 3 * OUTPUT_STRIDES[name]
  sides = _feature_sizes(model, size)
  assert {k: sides[k] * s for k, s in strides.items()} == {k: size for k in strides}
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x), jax.eval_shape(
      lambda x: _init(model, x), x), x)
  assert logits.shape == (1, size, size, 3)
