"""The optimizer against a direct implementation of Caffe's SGDSolver on the summed loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppool_jax import configs
from ppool_jax.models import VGG16Seg
from ppool_jax.train.caffe import CaffeSolver, map_summed_solver, param_multipliers
from ppool_jax.train.config import base_config
from ppool_jax.train.optim import effective_solver, make_optimizer

def _config(name, arg):
  return configs.get_config(name, arg)


# Caffe multipliers written out per leaf, as a prototxt would give them (not via our rules).
PARAMS = {
    "backbone": {"conv1_1": {"kernel": (1.0, 1.0), "bias": (2.0, 0.0)},
                 "pool1": {"side_branch": {"conv_window": {"kernel": (3.0, 1.0)},
                                           "prelu": {"slope": (3.0, 0.0)},
                                           "conv_alpha": {"kernel": (3.0, 1.0),
                                                          "bias": (6.0, 0.0)}}}},
    "classifier": {"kernel": (10.0, 1.0), "bias": (20.0, 0.0)},
}


def _leaves_with_mults():
  flat = jax.tree_util.tree_flatten_with_path(PARAMS, is_leaf=lambda x: isinstance(x, tuple))[0]
  return [(jax.tree_util.keystr(p), m) for p, m in flat]


def caffe_direct(w, grads_sum, lr_at, momentum, wd, mults, steps):
  """Caffe's SGDSolver::ComputeUpdateValue + Regularize + Update, in float64 NumPy."""
  w = {k: v.copy() for k, v in w.items()}
  hist = {k: np.zeros_like(v) for k, v in w.items()}
  for it in range(steps):
    g = grads_sum(w)
    for k in w:
      lr_mult, decay_mult = mults[k]
      diff = g[k] + wd * decay_mult * w[k]                 # Regularize (L2)
      hist[k] = momentum * hist[k] + lr_at(it) * lr_mult * diff
      w[k] = w[k] - hist[k]
  return w


def test_mean_loss_step_equals_caffes_step_on_the_summed_loss():
  cfg = base_config()
  cfg.dataset.crop_size, cfg.global_batch_size = 4, 2          # P = 32 pixels
  cfg.optim.learning_rate, cfg.optim.weight_decay = 2e-3, 0.05  # decay large enough to see
  cfg.optim.step_boundaries, cfg.total_steps = (4,), 9
  cfg.optim.head_lr_mult = 10.0
  p_pixels = 32
  keys = _leaves_with_mults()
  rng = np.random.default_rng(0)
  shapes = {k: (3, 2) if "kernel" in k else (2,) for k, _ in keys}
  w0 = {k: rng.normal(size=shapes[k]) for k, _ in keys}
  targets = {k: rng.normal(size=(p_pixels,) + shapes[k]) for k, _ in keys}

  def summed_loss_grads(w):  # sum over P pixels of 0.5 ||w - t_p||^2
    return {k: (p_pixels * w[k] - targets[k].sum(0)) for k in w}

  expected = caffe_direct(w0, summed_loss_grads, lambda it: 2e-3 * (0.1 if it >= 4 else 1.0),
                          0.9, 0.05, dict(keys), 9)
  with jax.enable_x64(True):
    tree = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(PARAMS, is_leaf=lambda x: isinstance(x, tuple)),
        [jnp.asarray(w0[k]) for k, _ in keys])
    tx = make_optimizer(cfg)
    state = tx.init(tree)
    for _ in range(9):
      # Our loss: the summed loss divided by P (loss.normalization = "batch_pixels").
      grads = jax.tree_util.tree_map(lambda g: jnp.asarray(g) / p_pixels, jax.tree_util.tree_unflatten(
          jax.tree_util.tree_structure(tree), [summed_loss_grads(
              {k: np.asarray(v) for (k, _), v in zip(keys, jax.tree_util.tree_leaves(tree))})[k]
              for k, _ in keys]))
      updates, state = tx.update(grads, state, tree)
      tree = jax.tree_util.tree_map(lambda a, b: a + b, tree, updates)
    got = dict(zip([k for k, _ in keys], map(np.asarray, jax.tree_util.tree_leaves(tree))))
  for k, _ in keys:
    moved = np.abs(expected[k] - w0[k]).max()
    assert moved > 1e-3, k
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-6 * moved, err_msg=k)


def test_paper_recipe_keeps_weights_under_zero_gradient_as_caffe_does():
  # The defect this guards against: mapping the lr (x P) but not the decay (/ P) shrank a
  # backbone weight to 0.36 in 1,000 steps and a side-branch bias from 20 to 0.85.
  cfg = _config("table1", "voc_aug,vgg16,p")
  solver = effective_solver(cfg)
  p_pixels = 321 * 321 * 10
  assert solver.base_lr == pytest.approx(2e-7 * p_pixels)
  assert solver.weight_decay == pytest.approx(5e-4 / p_pixels)
  params = {"backbone": {"conv1_1": {"kernel": jnp.ones((3,))},
                         "pool1": {"side_branch": {"conv_alpha": {"bias": jnp.full((3,), 20.0)}}}}}
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params)
    tx = make_optimizer(cfg)
    state = tx.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    step = jax.jit(lambda p, s: tx.update(zeros, s, p))
    for _ in range(1000):
      updates, state = step(params, state)
      params = jax.tree_util.tree_map(lambda a, b: a + b, params, updates)
  caffe = caffe_direct({"w": np.ones(3)}, lambda w: {"w": np.zeros(3)}, lambda it: 2e-7, 0.9, 5e-4,
                       {"w": (1.0, 1.0)}, 1000)["w"]
  kernel = np.asarray(params["backbone"]["conv1_1"]["kernel"])
  np.testing.assert_allclose(kernel, caffe, rtol=1e-12)
  assert kernel[0] > 0.99999
  np.testing.assert_array_equal(params["backbone"]["pool1"]["side_branch"]["conv_alpha"]["bias"],
                                20.0)  # biases have decay_mult 0


def test_multiplier_rules_on_a_real_model():
  model = VGG16Seg(num_classes=3, pooling="p", width=0.125)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  solver = CaffeSolver(1.0, 0.9, 5e-4, head_lr_mult=10.0)
  lr, decay = param_multipliers(params["params"], solver)
  sb = lambda t: t["backbone"]["pool2"]["side_branch"]
  assert (lr["backbone"]["conv1_1"]["kernel"], decay["backbone"]["conv1_1"]["kernel"]) == (1, 1)
  assert (lr["backbone"]["conv1_1"]["bias"], decay["backbone"]["conv1_1"]["bias"]) == (2, 0)
  assert (sb(lr)["conv_window"]["kernel"], sb(decay)["conv_window"]["kernel"]) == (3, 1)
  assert (sb(lr)["prelu"]["slope"], sb(decay)["prelu"]["slope"]) == (3, 0)
  assert (sb(lr)["conv_alpha"]["bias"], sb(decay)["conv_alpha"]["bias"]) == (6, 0)
  assert (lr["classifier"]["kernel"], lr["classifier"]["bias"]) == (10, 20)


def test_bad_settings_are_clear_errors():
  cfg = base_config()
  cfg.loss.normalization = "valid"
  with pytest.raises(ValueError, match="loss.normalization='batch_pixels'"):
    make_optimizer(cfg)
  cfg.optim.name = "adam"
  with pytest.raises(ValueError, match="only mapped for caffe_sgd"):
    make_optimizer(cfg)
  with pytest.raises(ValueError, match="must be positive"):
    map_summed_solver(CaffeSolver(1.0, 0.9, 5e-4), 0)


def test_table45_recipes_follow_their_pipelines():
  # DeepLab-LargeFOV: 0.001, classifier at 0.01, x0.1 every 2000 iterations, batch 20.
  cfg = _config("table45", "deeplab_largefov,voc_aug,p")
  solver = effective_solver(cfg)
  lr, _ = param_multipliers({"fc8": {"kernel": 0, "bias": 0}, "fc7": {"kernel": 0}}, solver)
  assert solver.base_lr * lr["fc8"]["kernel"] == pytest.approx(0.01)
  assert solver.base_lr * lr["fc7"]["kernel"] == pytest.approx(0.001)
  from ppool_jax.train.optim import learning_rate_schedule
  sched = learning_rate_schedule(cfg, cfg.total_steps, solver.base_lr)
  assert [float(sched(s)) for s in (1999, 2000, 4000)] == pytest.approx([1e-3, 1e-4, 1e-5])
  assert (cfg.global_batch_size, cfg.total_steps, cfg.loss.normalization) == (20, 6000, "valid")
  # FCN-8s: 1e-14 on the summed loss of one whole image, momentum 0.99, mapped exactly.
  cfg = _config("table45", "fcn8s,voc_aug,max")
  solver = effective_solver(cfg)
  assert solver.base_lr == pytest.approx(1e-14 * 500 * 500)
  assert solver.weight_decay == pytest.approx(5e-4 / (500 * 500))
  assert solver.momentum == 0.99 and cfg.loss.normalization == "batch_pixels"
  # DeepLabv3: poly from 0.007, 30K iterations, batch 16, crop 513, BatchNorm trained.
  cfg = _config("table45", "deeplabv3,voc_aug,p")
  assert (cfg.optim.name, cfg.optim.learning_rate, cfg.optim.schedule) == ("sgd", 7e-3, "poly")
  assert (cfg.total_steps, cfg.global_batch_size, cfg.dataset.crop_size) == (30_000, 16, 513)
  assert not cfg.model.frozen_bn
  make_optimizer(cfg)  # builds


@pytest.mark.parametrize("name", ["caffe_sgd", "adam"])
def test_frozen_modules_never_move_and_the_rest_trains_as_without_freezing(name):
  """Caffe's lr_mult 0: the frozen module keeps its exact values (no velocity, no weight
  decay), every other leaf gets the same updates as with nothing frozen (updates are
  elementwise)."""
  cfg = base_config()
  cfg.optim.name = name
  if name == "adam":
    cfg.optim.source_loss, cfg.loss.normalization, cfg.optim.weight_decay = "mean", "valid", 0.1
    cfg.optim.learning_rate = 1e-2  # a step that float32 resolves on the bias 20
  model = VGG16Seg(num_classes=3, pooling="p", width=0.125, blocks=((8,), (8,)))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  grads = [jax.tree_util.tree_map(lambda x, k=k: jax.random.normal(jax.random.PRNGKey(k), x.shape),
                                  params) for k in range(3)]

  def run(frozen):
    cfg.optim.frozen = frozen
    tx = make_optimizer(cfg)
    p, state = params, tx.init(params)
    for g in grads:
      updates, state = tx.update(g, state, p)
      p = jax.tree_util.tree_map(lambda a, b: a + b, p, updates)
    return p

  free, frozen = run(()), run(("backbone",))
  jax.tree_util.tree_map(np.testing.assert_array_equal, frozen["backbone"], params["backbone"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, frozen["classifier"], free["classifier"])
  moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), free["backbone"],
                                 params["backbone"])
  assert all(jax.tree_util.tree_leaves(moved))  # the test would see a frozen module move
  cfg.optim.frozen = ("backbon",)
  with pytest.raises(ValueError, match="optim.frozen names \\['backbon'\\]"):
    make_optimizer(cfg).init(params)
