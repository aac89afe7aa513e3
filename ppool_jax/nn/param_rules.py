"""Per-parameter rules as data: ordered ``(regex, value)`` lists matched against parameter paths.

A parameter's *path* is its keys joined by ``/`` with no leading slash
(``backbone/pool2/side_branch/conv_alpha/bias``), as big_vision names parameters. A rule list
is an ordered sequence of ``(pattern, value)`` pairs; a parameter takes the value of the
**first** rule whose pattern matches its whole path (``re.fullmatch``). These are the
semantics of big_vision's ``utils.make_mask_trees`` ("only first match") behind its
``lr_mults``, ``wd_mults`` and ``schedule`` lists; unlike big_vision, a parameter that no rule
matches is an error (give a catch-all ``(".*", value)`` last) rather than a silent default.

The pattern builders (:func:`module`, :func:`leaf`, :func:`module_leaf`, :func:`top_level`,
:func:`all_of`) turn
module and parameter names into patterns, so that rules name what they mean and the names
themselves come from the layer that defines them (``SIDE_BRANCH``, a model's
``HEAD_MODULES``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax

Rules = Sequence[tuple[str, Any]]


def path_name(path) -> str:
  """The ``/``-joined name of a ``jax.tree_util`` key path (dict keys, attribute names and
  sequence indices)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def param_names(tree) -> list[str]:
  """Every leaf's path name, in ``jax.tree_util`` order."""
  return [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def compile_rules(rules: Rules, what: str = "rules", numeric: bool = True
                  ) -> list[tuple[re.Pattern, Any]]:
  """Checks and compiles ``rules``; ``what`` names them in errors (``"optim.lr_rules"``).

  Raises:
    ValueError: a rule that is not a ``(pattern, value)`` pair, a pattern that is not a valid
      regex or starts with ``/``, or (``numeric``) a value that is not a finite number >= 0.
  """
  if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
    raise ValueError(f"{what} must be a sequence of (regex, value) pairs, got {rules!r}.")
  out = []
  for rule in rules:
    if isinstance(rule, (str, bytes)) or not isinstance(rule, Sequence) or len(rule) != 2:
      raise ValueError(f"{what}: each rule must be a (regex, value) pair, got {rule!r}.")
    pattern, value = rule
    if not isinstance(pattern, str):
      raise ValueError(f"{what}: pattern {pattern!r} must be a string.")
    if pattern.startswith("/"):
      raise ValueError(f"{what}: pattern {pattern!r} starts with '/'; parameter paths do not "
                       "(e.g. 'backbone/conv1_1/bias').")
    try:
      compiled = re.compile(pattern)
    except re.error as e:
      raise ValueError(f"{what}: pattern {pattern!r} is not a valid regex: {e}.") from None
    if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
      raise ValueError(f"{what}: the value of {pattern!r} must be a finite number >= 0, "
                       f"got {value!r}.")
    out.append((compiled, value))
  return out


def first_match(compiled: list[tuple[re.Pattern, Any]], name: str) -> int | None:
  """The index of the first rule whose pattern matches all of ``name``, or ``None``."""
  for i, (pattern, _) in enumerate(compiled):
    if pattern.fullmatch(name):
      return i
  return None


def rule_indices(tree, rules: Rules, what: str = "rules", numeric: bool = True):
  """A tree like ``tree`` holding, per leaf, the index of the rule that decides it.

  Raises:
    ValueError: a parameter no rule matches (named, with ``what``).
  """
  compiled = compile_rules(rules, what, numeric)

  def index(path, _):
    name = path_name(path)
    i = first_match(compiled, name)
    if i is None:
      raise ValueError(f"{what}: no rule matches parameter {name!r}; end the list with a "
                       "catch-all ('.*', value).")
    return i

  return jax.tree_util.tree_map_with_path(index, tree)


def resolve(tree, rules: Rules, what: str = "rules", numeric: bool = True):
  """A tree like ``tree`` holding each leaf's value under ``rules`` (first match wins)."""
  values = [v for _, v in rules]
  return jax.tree_util.tree_map(lambda i: values[i], rule_indices(tree, rules, what, numeric))


def unmatched_patterns(tree, rules: Rules) -> list[str]:
  """The patterns of ``rules`` that decide no leaf of ``tree`` (they match none, or only
  parameters that an earlier rule already took)."""
  used = set(jax.tree_util.tree_leaves(rule_indices(tree, list(rules) + [(".*", 0)],
                                                     numeric=False)))
  return [p for i, (p, _) in enumerate(rules) if i not in used]


def _alternatives(names: Sequence[str]) -> str:
  if not names or any(not isinstance(n, str) or not n for n in names):
    raise ValueError(f"module and parameter names must be non-empty strings, got {names!r}.")
  escaped = [re.escape(n) for n in names]
  return escaped[0] if len(escaped) == 1 else f"(?:{'|'.join(escaped)})"


def module(*names: str) -> str:
  """A pattern for parameters with any module on their path named one of ``names``."""
  return f"(?:.*/)?{_alternatives(names)}/.*"


def top_level(*names: str) -> str:
  """A pattern for parameters under one of the top-level modules ``names``."""
  return f"{_alternatives(names)}/.*"


def leaf(*names: str) -> str:
  """A pattern for parameters (leaves) named one of ``names``, anywhere."""
  return f"(?:.*/)?{_alternatives(names)}"


def module_leaf(modules: Sequence[str], names: Sequence[str]) -> str:
  """``all_of(module(*modules), leaf(*names))``, readably: a leaf named one of ``names``
  under a module named one of ``modules``."""
  return f"(?:.*/)?{_alternatives(modules)}/(?:.*/)?{_alternatives(names)}"


def all_of(*patterns: str) -> str:
  """A pattern for paths that every one of ``patterns`` matches (whole-path lookaheads)."""
  return "".join(f"(?=(?:{p})\\Z)" for p in patterns) + ".*"
