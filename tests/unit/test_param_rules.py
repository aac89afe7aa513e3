"""Per-parameter rules as data (ppool_jax.nn.param_rules, train.optim.recipe_rules): the
multipliers of every parameter of the paper's models equal those of the hand-written rules
they replaced (a frozen copy below), first match wins, and bad rules are clear errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tiny_config
from ppool_jax import configs
from ppool_jax.models import head_modules
from ppool_jax.nn import param_rules
from ppool_jax.train import model_from_config
from ppool_jax.train.caffe import solver_from_config
from ppool_jax.train.optim import (learning_rate_schedule, make_optimizer, recipe_rules,
                                   rules_table)

# ---- The rules as hand-written before issue #21, frozen here as the reference. -------------
_LEGACY_HEADS = ("classifier", "fc8", "score_fr", "score_pool3", "score_pool4")


def _legacy_names(path):
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def legacy_caffe(path, solver):
  """train/caffe.py's param_multipliers before the rules: (lr_mult, decay_mult)."""
  names = _legacy_names(path)
  leaf = names[-1]
  if leaf == "bias":
    lr, decay = solver.bias_lr_mult, solver.bias_decay_mult
  elif leaf == "slope":
    lr, decay = 1.0, solver.prelu_decay_mult
  else:
    lr, decay = 1.0, 1.0
  if "side_branch" in names:
    lr *= solver.side_branch_lr_mult
    if leaf not in ("bias", "slope"):
      decay = solver.side_branch_decay_mult
  if any(n in _LEGACY_HEADS for n in names):
    lr *= solver.head_lr_mult
  return lr, decay


def legacy_optax(path, o):
  """nn/optim.py's side_branch_labels and train/optim.py's _kernels: (lr_mult, decay_mult)."""
  names = _legacy_names(path)
  return (o.side_branch_lr_mult if "side_branch" in names else 1.0,
          1.0 if names[-1] == "kernel" else 0.0)


def legacy(cfg, params):
  """{path: (lr_mult, decay_mult)}, lr 0 for the top-level modules in optim.frozen."""
  out = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    if cfg.optim.name == "caffe_sgd":
      lr, decay = legacy_caffe(path, solver_from_config(cfg.optim))
    else:
      lr, decay = legacy_optax(path, cfg.optim)
    if _legacy_names(path)[0] in tuple(cfg.optim.frozen):
      lr = 0.0
    out[param_rules.path_name(path)] = (lr, decay)
  return out


def new(cfg, params):
  lr_rules, decay_rules = recipe_rules(cfg)
  lr = jax.tree_util.tree_leaves(param_rules.resolve(params, lr_rules))
  decay = jax.tree_util.tree_leaves(param_rules.resolve(params, decay_rules))
  return dict(zip(param_rules.param_names(params), zip(lr, decay)))


@functools.lru_cache(maxsize=None)
def _config_params(name, arg):
  return _params(configs.get_config(name, arg))


def _params(cfg, size=64):
  model = model_from_config(cfg)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, size, size, 3))))
  return variables["params"]


CONFIGS = [("table1", "voc_aug,vgg16,p"), ("table1", "voc_aug,vgg16,max"),
           ("table1", "voc_aug,resnet50,p"), ("table45", "deeplab_largefov,voc_aug,p"),
           ("table45", "fcn8s,voc_aug,p"), ("table45", "deeplabv3,voc_aug,p")]


@pytest.mark.parametrize("name,arg", CONFIGS)
@pytest.mark.parametrize("variant", ["as_is", "multipliers_changed", "frozen"])
def test_every_parameter_keeps_its_hand_written_multipliers(name, arg, variant):
  cfg = configs.get_config(name, arg)
  if variant == "multipliers_changed":  # every field moved off its default, sgd/adam too
    o = cfg.optim
    o.bias_lr_mult, o.bias_decay_mult, o.head_lr_mult, o.side_branch_lr_mult = 2.5, 0.3, 7.0, 1.7
    o.prelu_decay_mult, o.side_branch_decay_mult = 0.2, 0.6
  if variant == "frozen":
    cfg.optim.frozen = ("backbone",)
  params = _config_params(name, arg)  # the multiplier fields do not change the model
  got, want = new(cfg, params), legacy(cfg, params)
  assert list(got) == list(want) and len(got) > 20
  mismatches = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
  assert not mismatches
  assert len(set(got.values())) > 1
  if arg.endswith(",p"):  # the comparison covers side branches
    assert any(v[0] not in (1.0, cfg.optim.bias_lr_mult) for k, v in got.items()
               if "/side_branch/" in k)


def test_heads_come_from_the_models():
  assert head_modules("vgg16_seg") == ("classifier",)
  assert head_modules("deeplab_largefov") == ("fc8",)
  assert set(head_modules("fcn8s")) == {"score_fr", "score_pool3", "score_pool4"}
  assert set(head_modules()) == set(_LEGACY_HEADS)
  with pytest.raises(ValueError, match="unknown model 'vgg'"):
    head_modules("vgg")


def _legacy_optax(cfg):
  """train/optim.py's sgd/adam before the rules: two groups, decay masked to kernels."""
  o = cfg.optim
  schedule = learning_rate_schedule(cfg, cfg.total_steps)
  kernels = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", p)
  opt = (lambda lr: optax.sgd(lr, momentum=o.momentum or None)) if o.name == "sgd" else optax.adam
  make = lambda lr: optax.chain(optax.add_decayed_weights(o.weight_decay, mask=kernels), opt(lr))
  labels = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: "side" if "side_branch" in _legacy_names(path) else "default", p)
  return optax.multi_transform(
      {"default": make(schedule), "side": make(lambda s: o.side_branch_lr_mult * schedule(s))},
      labels)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optax_updates_are_bit_identical_to_the_hand_written_optimizer(name, tiny_cfg):
  cfg = tiny_cfg
  cfg.optim.name = name
  cfg.optim.weight_decay = 0.01
  shapes = {"backbone": {"conv1_1": {"kernel": (3, 3, 2, 4), "bias": (4,)},
                         "pool1": {"side_branch": {"conv_window": {"kernel": (2, 2, 1, 4)},
                                                   "prelu": {"slope": (4,)},
                                                   "conv_alpha": {"kernel": (1, 1, 1, 4),
                                                                  "bias": (4,)}}}},
            "classifier": {"kernel": (1, 1, 4, 3), "bias": (3,)}}
  rng = np.random.default_rng(0)
  is_shape = lambda x: isinstance(x, tuple)
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                                  is_leaf=is_shape)
  grads = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                                 is_leaf=is_shape)
  results = []
  for tx in (make_optimizer(cfg), _legacy_optax(cfg)):
    state, p, update = tx.init(params), params, jax.jit(tx.update)
    for _ in range(3):
      updates, state = update(grads, state, p)
      p = optax.apply_updates(p, updates)
    results.append(p)
  jax.tree_util.tree_map(np.testing.assert_array_equal, results[0], results[1])
  moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)),
                                                           results[0], params))
  assert all(moved)


TREE = {"backbone": {"conv1": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))},
                     "pool1": {"side_branch": {"conv_alpha": {"kernel": jnp.ones((2,)),
                                                              "bias": jnp.ones((2,))}}}},
        "classifier": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}}


def test_first_match_wins_and_every_parameter_needs_a_rule():
  rules = [(param_rules.all_of(param_rules.module("side_branch"), param_rules.leaf("bias")), 6.0),
           (param_rules.module("side_branch"), 3.0), (param_rules.leaf("bias"), 2.0),
           (param_rules.top_level("classifier"), 10.0), (".*", 1.0)]
  got = dict(zip(param_rules.param_names(TREE),
                 jax.tree_util.tree_leaves(param_rules.resolve(TREE, rules))))
  assert got == {"backbone/conv1/bias": 2.0, "backbone/conv1/kernel": 1.0,
                 "backbone/pool1/side_branch/conv_alpha/bias": 6.0,
                 "backbone/pool1/side_branch/conv_alpha/kernel": 3.0,
                 "classifier/bias": 2.0, "classifier/kernel": 10.0}
  with pytest.raises(ValueError, match="no rule matches parameter 'backbone/conv1/kernel'"):
    param_rules.resolve(TREE, rules[:-2])
  with pytest.raises(ValueError, match="lr must be a sequence of \\(regex, value\\) pairs"):
    param_rules.compile_rules("x", "lr")  # a bare string is not a list of rules
  # Patterns match whole paths: 'conv1' alone matches nothing.
  assert param_rules.unmatched_patterns(TREE, [("conv1", 1.0), ("classifier/.*", 1.0),
                                               ("classifier/bias", 2.0)]) == ["conv1",
                                                                              "classifier/bias"]


@pytest.mark.parametrize("rules,message", [
    ((("(", 1.0),), r"pattern '\(' is not a valid regex"),
    ((("/backbone/.*", 1.0),), r"pattern '/backbone/\.\*' starts with '/'"),
    ((("x", -1.0),), "the value of 'x' must be a finite number >= 0"),
    ((("x", float("nan")),), "the value of 'x' must be a finite number >= 0, got nan"),
    ((("x",),), r"each rule must be a \(regex, value\) pair"),
])
def test_bad_rules_are_clear_errors(rules, message, tiny_cfg):
  cfg = tiny_cfg
  cfg.optim.lr_rules = rules
  with pytest.raises(ValueError, match="optim.lr_rules: " + message):
    make_optimizer(cfg)


def test_config_rules_come_first_and_a_rule_matching_nothing_is_named(tiny_cfg):
  cfg = tiny_cfg
  cfg.optim.lr_rules = ((param_rules.module("side_branch"), 5.0),)
  cfg.optim.decay_rules = (("backbone/conv1_1/kernel", 0.0),)
  params = _params(cfg, 32)
  got, base = new(cfg, params), new(tiny_config.get_config(), params)
  for k in got:
    lr = 5.0 if "/side_branch/" in k else base[k][0]
    decay = 0.0 if k == "backbone/conv1_1/kernel" else base[k][1]
    assert got[k] == (lr, decay), k
  cfg.optim.decay_rules = (("backbone/conv9/.*", 0.0),)
  with pytest.raises(ValueError, match=r"optim.decay_rules: pattern\(s\) \['backbone/conv9/.\*'\] "
                                       "match no parameter"):
    make_optimizer(cfg).init(params)


def test_a_config_rule_trains_part_of_a_frozen_module(tiny_cfg):
  """lr x0 freezes as optim.frozen does; a config rule before it keeps the side branches
  training inside the frozen backbone."""
  cfg = tiny_cfg
  cfg.optim.frozen = ("backbone",)
  cfg.optim.lr_rules = ((param_rules.module("side_branch"), 3.0),)
  params = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, 0.5, x.dtype), _params(cfg, 32))
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  tx = make_optimizer(cfg)
  updates, _ = tx.update(grads, tx.init(params), params)
  for name, u in zip(param_rules.param_names(params), jax.tree_util.tree_leaves(updates)):
    trains = "/side_branch/" in name or name.startswith("classifier/")
    assert bool(np.all(np.asarray(u) != 0)) == trains, name
  table = rules_table(cfg, params)
  lines = {line.split()[0]: line.split()[1] for line in table.splitlines()[1:]}
  assert len(lines) == len(param_rules.param_names(params))
  assert lines["backbone/conv1_1/kernel"] == "frozen"
  assert lines["backbone/pool1/side_branch/conv_alpha/bias"] == "x3"
  assert lines["classifier/kernel"] == "x1"


def test_sgd_adam_state_keeps_the_side_branch_group_of_older_checkpoints():
  """Runs written before the rules were data have opt_state groups "default" and
  "side_branch": the same names keep them resumable."""
  from ppool_jax.train.loop import init_state, model_from_config
  from ppool_jax.train.optim import make_optimizer
  for name in ("sgd", "adam"):
    cfg = tiny_config.get_config()
    cfg.optim.name = name
    net, tx = model_from_config(cfg), make_optimizer(cfg)
    state = jax.eval_shape(lambda: init_state(cfg, net, tx, (32, 32, 3)))
    assert sorted(state.opt_state.inner_states) == ["default", "side_branch"]
