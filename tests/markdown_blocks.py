"""The Markdown files whose ```python blocks must run (README.md and docs/*.md), and the block
extractor and runner (tests/unit/test_docs.py tests them, tests/integration/test_doc_blocks.py
runs every file's blocks)."""

import pathlib
import re

import support

ROOT = pathlib.Path(support.ROOT)

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
  """``[(line of the block's first code line, code)]`` of the ```python fences at column 0."""
  return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def run_blocks(text: str, name: str) -> int:
  """Executes ``text``'s Python blocks in order in one namespace; returns how many ran.
  A block that raises propagates, its traceback naming ``name`` and the Markdown line."""
  if text.count("```python") != len(python_blocks(text)):
    raise ValueError(f"{name}: a ```python fence is not at column 0 or not closed; it would "
                     "not be run.")
  namespace = {"__name__": "__docs__"}
  blocks = python_blocks(text)
  for line, code in blocks:
    exec(compile("\n" * (line - 1) + code, name, "exec"), namespace)  # noqa: S102
  return len(blocks)
