"""The committed demo result cannot go stale (issue #20 item 6): ``make demo`` prints its
results as the Markdown table of ``experiments/results/demo.md``, and the slow test reruns the
demo and requires the same rows, to the 4 printed decimals (``make demo-check`` runs it alone).

The demo is deterministic on one machine kind (XLA CPU, one device, as ``make demo`` runs it);
a change to the numerics must regenerate demo.md (see the file's header)."""

import os
import pathlib
import subprocess
import sys

import pytest

from ppool_jax import demo
import support

ROOT = pathlib.Path(support.ROOT)

DEMO_MD = ROOT / "experiments" / "results" / "demo.md"


def table_rows(text: str) -> list[str]:
  """The Markdown table lines of ``text`` (lines starting with ``|``), stripped."""
  return [line.strip() for line in text.splitlines() if line.startswith("|")]


SCORES = {"miou": 0.44304, "pixel_accuracy": 0.9, "boundary_f": 0.50956,
          "boundary_band_miou": float("nan")}


def test_results_table_prints_four_decimals_under_demo_md_header():
  table = demo.results_table([("net, 1,500 steps", SCORES), ("trivial", dict(SCORES, miou=0))])
  rows = table_rows(table)
  assert rows[0] == table_rows(DEMO_MD.read_text())[0]   # the committed header is the printed one
  assert rows[1] == "|---|---|---|---|---|"
  assert rows[2] == "| net, 1,500 steps | 0.4430 | 0.9000 | 0.5096 | nan |"
  assert rows[3] == "| trivial | 0.0000 | 0.9000 | 0.5096 | nan |"


def test_demo_md_records_command_and_commit():
  text = DEMO_MD.read_text()
  assert "python -m ppool_jax.demo --workdir runs/demo" in text
  assert "Produced at commit" in text and len(table_rows(text)) == 4


def test_provenance_names_the_recorded_commit(tmp_path):
  (tmp_path / "config.json").write_text('{"git_commit": "abc123", "git_dirty": true}')
  assert demo.provenance(str(tmp_path)).startswith("commit abc123 (uncommitted changes), ppool_jax ")
  assert demo.provenance(str(tmp_path / "none")).startswith("not a git checkout, ")


@pytest.mark.slow
def test_make_demo_reproduces_demo_md(tmp_path):
  """Reruns the demo as ``make demo`` does (one CPU device; a few minutes on 2 cores)."""
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=str(ROOT))
  result = subprocess.run([sys.executable, "-m", "ppool_jax.demo", "--workdir",
                           str(tmp_path / "demo")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=3600)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = table_rows(result.stdout)
  assert printed == table_rows(DEMO_MD.read_text()), (
      "make demo no longer prints experiments/results/demo.md's table; if the change of the "
      "numerics is intended, regenerate demo.md (command, commit, table, demo.png):\n" +
      "\n".join(printed))
