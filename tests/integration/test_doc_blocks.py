"""The documentation's code runs (issue #20 item 5): every ```python block of README.md and
docs/*.md, each file's blocks in order in one namespace and a fresh working directory
(the extractor: tests/markdown_blocks.py, tested by tests/unit/test_docs.py).

Blocks that need downloaded data or weights are written as ```bash or ```text, which are not
run. A Python block must therefore be self-contained (tiny arrays, tiny models)."""

import pytest

from markdown_blocks import DOCS, ROOT, run_blocks


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  run_blocks(path.read_text(), str(path.relative_to(ROOT)))
