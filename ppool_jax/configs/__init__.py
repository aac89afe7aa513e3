"""Training configs shipped with the package (they survive a non-editable ``pip install``).

* ``synthetic_demo``: ``make demo``'s small VGG-style net on the embedded synthetic data;
* ``table1``, ``table45``, ``table6``: the paper's tables, one run per config argument.

``python -m ppool_jax.train --config NAME[:ARG]`` takes one of these names (``table1:voc_aug,
vgg16,p``), ``ppool_jax/configs/NAME.py[:ARG]``, or the path of any config file; in Python,
``get_config("table6", "pool3")``. Every config file defines ``get_config([arg])`` returning an
``ml_collections.ConfigDict`` built on :func:`ppool_jax.train.config.base_config`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  """The package's config names."""
  return sorted(m.name for m in pkgutil.iter_modules([_HERE]) if not m.name.startswith("_"))


def path(name: str) -> str:
  """The file of the package config ``name`` (``"table1"`` or ``"table1.py"``)."""
  name = name[:-3] if name.endswith(".py") else name
  if name not in names():
    raise ValueError(f"unknown config {name!r}; package configs: {', '.join(names())}.")
  return os.path.join(_HERE, f"{name}.py")


def get_config(name: str, arg: str | None = None):
  """``ppool_jax.configs.<name>.get_config(arg)`` (no argument when ``arg`` is None)."""
  path(name)  # checks the name
  module = importlib.import_module(f"{__name__}.{name.removesuffix('.py')}")
  return module.get_config() if arg is None else module.get_config(arg)


def resolve(spec: str) -> str:
  """A ``--config`` value as a file path for ml_collections: ``NAME[:ARG]``,
  ``[.../]ppool_jax/configs/NAME.py[:ARG]`` (wherever the package is installed) or a file path.

  An existing file wins; anything else that is not a package config is returned unchanged
  (ml_collections then reports the missing file).
  """
  file, sep, arg = spec.partition(":")
  if not file or os.path.isfile(file):
    return spec
  head, base = os.path.split(os.path.normpath(file))
  stem = base[:-3] if base.endswith(".py") else base
  in_package = head == "" or head.replace(os.sep, "/").endswith("ppool_jax/configs")
  if in_package and stem in names():
    return path(stem) + sep + arg
  return spec


def load(spec: str):
  """The config of a ``--config`` value (:func:`resolve`): ``get_config(ARG)`` of the file."""
  import importlib.util
  file, sep, arg = resolve(spec).partition(":")
  if not os.path.isfile(file):
    raise ValueError(f"{spec!r} is neither a config file nor a package config "
                     f"({', '.join(names())}).")
  module_spec = importlib.util.spec_from_file_location("_ppool_jax_config", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if sep else module.get_config()


def define_config_flag(name: str = "config", default: str | None = None,
                       help_string: str = "Config: a package config name "
                       f"({', '.join(names())}), optionally ':ARG', or a config file path.",
                       flag_values=None):
  """``ml_collections.config_flags.DEFINE_config_file`` whose value may also be a package
  config name (see :func:`resolve`). Call it from a ``__main__`` path, not at import."""
  from absl import flags
  from ml_collections import config_flags

  flag_values = flags.FLAGS if flag_values is None else flag_values
  default = None if default is None else resolve(default)
  holder = config_flags.DEFINE_config_file(name, default, help_string, flag_values=flag_values)

  file_parser = flag_values[name].parser  # ml_collections' config-file parser

  class _ResolvingParser(flags.ArgumentParser):

    def parse(self, argument):
      spec = resolve(argument)
      if not os.path.isfile(spec.partition(":")[0]):
        raise ValueError(f"{argument!r} is neither a config file nor a package config "
                         f"({', '.join(names())}).")
      return file_parser.parse(spec)

    def flag_type(self):
      return file_parser.flag_type()

  # absl parses every later value (--config NAME) with the flag's parser.
  flag = flag_values[name]
  flag.parser = _ResolvingParser()
  # ml_collections applies the --config.<field> overrides after loading the file and raises
  # a KeyError (inside an AttributeError) with an escaped message for an unknown field.
  load_and_override = flag._parse

  def _parse(argument):
    try:
      return load_and_override(argument)
    except (AttributeError, KeyError) as e:
      raise flags.IllegalFlagValueError(unknown_field_message(name, e, sys.argv)) from e

  flag._parse = _parse
  return holder


def unknown_field_message(name: str, error: BaseException, argv) -> str:
  """One line for an override of a field the config lacks: the override flags that name the
  field, and ml_collections' "did you mean" suggestion when it made one."""
  text = error
  while isinstance(text, BaseException) and text.args:
    text = text.args[0]
  key, _, hint = str(text).partition("\n")
  key = key.strip("'\"")
  given = [m.group(0).split("=")[0] for a in argv
           if (m := re.match(rf"--?(?:no)?{re.escape(name)}\.[\w.]+", a))]
  named = [g for g in given if key in g.split(".")[1:]] or given
  where = f" ({', '.join(named)})" if named else ""
  hint = " " + " ".join(hint.split()) if hint else ""
  return f"the config has no field {key!r}{where}.{hint}"
