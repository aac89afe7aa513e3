"""The documentation cannot rot (issue #20 item 5): the block extractor that runs every
```python block of README.md and docs/*.md (tests/markdown_blocks.py; the runs themselves:
tests/integration/test_doc_blocks.py) runs them in order and fails on a raising block;
relative links point at files that exist; the README fits on a screen."""

import re
import traceback

import pytest

from markdown_blocks import DOCS, ROOT, python_blocks, run_blocks

README_LIMIT = 10_240  # bytes

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_extractor_runs_blocks_in_order_and_fails_on_a_raising_block():
  text = ("intro\n```python\nx = 1\n```\n```bash\nexit 1\n```\n"
          "```python\nassert x == 1\ny = x + 1\n```\n")
  assert python_blocks(text)[0] == (3, "x = 1\n")
  assert run_blocks(text, "ok.md") == 2
  with pytest.raises(ZeroDivisionError) as info:
    run_blocks("text\n\n```python\n1 / 0\n```\n", "bad.md")
  frame = traceback.extract_tb(info.value.__traceback__)[-1]
  assert (frame.filename, frame.lineno) == ("bad.md", 4)   # the Markdown file's line
  with pytest.raises(ValueError, match="not be run"):
    run_blocks("  ```python\nx = 1\n  ```\n", "indented.md")


def test_every_doc_has_been_found():
  names = {p.name for p in DOCS}
  assert {"README.md", "operator.md", "models.md", "data.md", "training.md", "inference.md",
          "experiments.md", "benchmarks.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_exist(path):
  missing = [t for t in LINK.findall(path.read_text())
             if "://" not in t and not (path.parent / t).exists()]
  assert not missing, f"{path.name} links to missing files: {missing}"


def test_readme_fits_on_a_screen():
  size = (ROOT / "README.md").stat().st_size
  assert size <= README_LIMIT, f"README.md is {size} bytes; move details to docs/."
