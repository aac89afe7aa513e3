"""How every ``python -m ppool_jax.<command>`` runs and reports errors.

:func:`run` is the one entry point of the CLIs (``train``, ``convert``; ``predict`` and
``export`` use it the same way)::

  def define_flags():              # the command's own flags
    flags.DEFINE_string("input", None, "...")

  def main(argv):                  # absl's main: the work, raising on bad input
    ...

  if __name__ == "__main__":
    cli.run(main, command="convert", define_flags=define_flags)

It defines ``--verbose`` next to the command's flags and parses them. A bad flag and any of
the project's errors (:data:`ERRORS`, plus the command's ``errors``) become ONE line on stderr,
``ppool_jax.<command>: error: <message>``, and exit status 2 (a usage or input problem, as
argparse reports it); with ``--verbose`` the exception propagates with its traceback. Other
exceptions (bugs) always show their traceback. Info logs are shown for ppool_jax's own
records only (JAX's backend probing and orbax's per-save messages stay at warning).
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app, flags, logging

# The exceptions the project raises for bad input: missing files and folders (OSError, e.g.
# FileNotFoundError, MissingDataError), bad values (ValueError: ConfigError, DatasetError,
# ConversionError, IncompatibleRunError), a missing optional dependency (ImportError).
ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError)
EXIT_STATUS = 2
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def message(error: BaseException) -> str:
  """The error's text on one line: a ``KeyError``'s key unquoted (``str(KeyError)`` is its
  repr), exceptions wrapping exceptions unwrapped, line breaks as spaces; the class name when
  the error has no text."""
  text: Any = error
  while isinstance(text, BaseException):
    if isinstance(text, KeyError) or (text.args and isinstance(text.args[0], BaseException)):
      text = text.args[0] if text.args else type(text).__name__
    else:
      text = str(text) or type(text).__name__
  return " ".join(str(text).split())


def error_line(command: str, error: BaseException | str) -> str:
  """``ppool_jax.<command>: error: <message>``."""
  text = error if isinstance(error, str) else message(error)
  return f"ppool_jax.{command}: error: {text}"


def verbose_requested(argv: Sequence[str]) -> bool:
  """Whether ``argv`` turns ``--verbose`` on (the last of ``--verbose[=bool]`` and
  ``--noverbose`` wins); read from argv itself, so it works when flag parsing failed."""
  on = False
  for arg in argv:
    m = re.fullmatch(r"--?(no)?verbose(?:=(.*))?", arg)
    if m:
      on = not m.group(1) and (m.group(2) or "true").lower() in ("true", "1", "t", "yes")
  return on


def _fail(command: str, error: BaseException | str) -> NoReturn:
  print(error_line(command, error), file=sys.stderr)
  sys.exit(EXIT_STATUS)


def _own_info_only(record: std_logging.LogRecord) -> bool:
  """Passes warnings and errors, and info records logged from the ppool_jax package."""
  return record.levelno >= std_logging.WARNING or os.path.abspath(
      record.pathname).startswith(_PACKAGE_DIR + os.sep)


def run(main: Callable[[list[str]], Any], command: str,
        define_flags: Callable[[], None] | None = None,
        errors: tuple[type[BaseException], ...] = (), argv: Sequence[str] | None = None) -> None:
  """Runs ``main(argv)`` as the CLI ``python -m ppool_jax.<command>`` (module docstring).

  Args:
    main: absl's main function, called with the arguments left after the flags.
    command: the name in the error line (``"train"`` gives ``ppool_jax.train: error: ...``).
    define_flags: defines the command's flags; called once, before ``--verbose`` is defined.
    errors: exception types reported in one line besides :data:`ERRORS`.
    argv: the command line (default ``sys.argv``).
  """
  if define_flags is not None:
    define_flags()
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "On an error, show the full traceback, not only the "
                      "one-line message.")
  argv = list(sys.argv if argv is None else argv)
  verbose = verbose_requested(argv)
  reported = ERRORS + tuple(errors)

  def parse(args: list[str]) -> list[str]:
    try:
      return flags.FLAGS(args)
    except (flags.Error, *reported) as e:
      if verbose:
        raise
      _fail(command, e)

  def wrapped(args: list[str]) -> Any:
    logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    if _own_info_only not in handler.filters:
      handler.addFilter(_own_info_only)
    try:
      return main(args)
    except reported as e:
      if verbose:
        raise
      _fail(command, e)

  app.run(wrapped, argv=argv, flags_parser=parse)


def call(fn: Callable[[], Any], command: str, verbose: bool,
         errors: tuple[type[BaseException], ...] = ()) -> Any:
  """``fn()`` for argparse-based commands (``predict``, ``export``): the project's errors
  (:data:`ERRORS` and ``errors``) print :func:`error_line` and return :data:`EXIT_STATUS`
  (``verbose``: they propagate with their traceback)."""
  try:
    return fn()
  except ERRORS + tuple(errors) as e:
    if verbose:
      raise
    print(error_line(command, e), file=sys.stderr)
    return EXIT_STATUS
