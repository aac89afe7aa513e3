"""``make demo`` still prints experiments/results/demo.md's table (issue #20 item 6): the demo
rerun as ``make demo`` runs it, its rows compared to the committed ones to the 4 printed
decimals (``make demo-check`` runs this file alone; the table's format:
tests/unit/test_demo_result.py).

The demo is deterministic on one machine kind (XLA CPU, one device, as ``make demo`` runs it);
a change to the numerics must regenerate demo.md (see the file's header)."""

import os
import subprocess
import sys

from support import DEMO_MD, ROOT, table_rows


def test_make_demo_reproduces_demo_md(tmp_path):
  """Reruns the demo as ``make demo`` does (one CPU device; a few minutes on 2 cores)."""
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, "-m", "ppool_jax.demo", "--workdir",
                           str(tmp_path / "demo")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=3600)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = table_rows(result.stdout)
  assert printed == table_rows(DEMO_MD.read_text()), (
      "make demo no longer prints experiments/results/demo.md's table; if the change of the "
      "numerics is intended, regenerate demo.md (command, commit, table, demo.png):\n" +
      "\n".join(printed))
