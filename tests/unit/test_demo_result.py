"""The committed demo result cannot go stale (issue #20 item 6): ``make demo`` prints its
results as the Markdown table of ``experiments/results/demo.md``, and
tests/integration/test_demo_rerun.py reruns the demo and requires the same rows, to the 4
printed decimals (``make demo-check`` runs it alone).

The demo is deterministic on one machine kind (XLA CPU, one device, as ``make demo`` runs it);
a change to the numerics must regenerate demo.md (see the file's header)."""

from ppool_jax import demo
from support import DEMO_MD, table_rows


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
