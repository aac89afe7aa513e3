"""The documentation cannot rot (issue #20 item 5): every ```python block of README.md and
docs/*.md runs, each file's blocks in order in one namespace and a fresh working directory;
relative links point at files that exist; the README fits on a screen.

Blocks that need downloaded data or weights are written as ```bash or ```text, which are not
run. A Python block must therefore be self-contained (tiny arrays, tiny models)."""

import pathlib
import re
import traceback

import pytest
import support

ROOT = pathlib.Path(support.ROOT)

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 10_240  # bytes

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


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
def test_python_blocks_run(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  run_blocks(path.read_text(), str(path.relative_to(ROOT)))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_exist(path):
  missing = [t for t in LINK.findall(path.read_text())
             if "://" not in t and not (path.parent / t).exists()]
  assert not missing, f"{path.name} links to missing files: {missing}"


def test_readme_fits_on_a_screen():
  size = (ROOT / "README.md").stat().st_size
  assert size <= README_LIMIT, f"README.md is {size} bytes; move details to docs/."
