"""The report writers' shared pieces: statistics over seeds, the score / paired / alpha tables,
the mean training curve, and the write that keeps a report's hand-written analysis.

Rows are what :func:`experiments.runner.run` returns (a run's ``result.json`` plus
``workdir``); a diverged run (``"diverged"`` set, no scores) is counted in a table's label and
left out of its numbers.
"""

from __future__ import annotations

import csv
import os

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ANALYSIS = "## Analysis"
ANALYSIS_PLACEHOLDER = f"{ANALYSIS}\n\n(to be written from the tables above)\n"


def summary(values) -> tuple[float, float, int]:
  """Mean, sample std (0 for one value) and n, ignoring NaN (diverged runs)."""
  v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
  if not len(v):
    return float("nan"), float("nan"), 0
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt(values, scale: float = 100.0) -> str:
  """``"mean ± sample std"`` of ``scale * values`` to one decimal (NaN left out); "–" if none."""
  m, s, n = summary([scale * v for v in values])
  return "–" if not n else f"{m:.1f} ± {s:.1f}"


def paired(rows, reference, key: str) -> dict:
  """``rows`` - ``reference`` paired by seed: mean difference, its 95 % t interval, n and how
  many seeds ``rows`` is ahead in. Seeds missing on either side are left out."""
  from scipy import stats
  ref = {r["seed"]: r.get(key, float("nan")) for r in reference}
  d = np.asarray([r.get(key, float("nan")) - ref[r["seed"]] for r in rows if r["seed"] in ref])
  d = d[np.isfinite(d)]
  n = len(d)
  if n < 2:
    return {"n": n, "mean": float(d.mean()) if n else float("nan"), "lo": float("nan"),
            "hi": float("nan"), "ahead": int((d > 0).sum())}
  half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
  return {"n": n, "mean": float(d.mean()), "lo": float(d.mean() - half),
          "hi": float(d.mean() + half), "ahead": int((d > 0).sum())}


def metrics_log(workdir: str, split: str = "train") -> dict[str, list[tuple[int, float]]]:
  """``{metric: [(step, value), ...]}`` from a run's metrics.csv (empty if it has none)."""
  out: dict = {}
  path = os.path.join(workdir, "metrics.csv")
  if not os.path.exists(path):
    return out
  with open(path) as f:
    for r in csv.DictReader(f):
      if r["split"] == split:
        out.setdefault(r["metric"], []).append((int(r["step"]), float(r["value"])))
  return out


def mean_curve(rows, metric: str = "loss", split: str = "train"):
  """``(steps, mean over rows)`` of one logged metric at the steps every run logged; diverged
  runs and runs without a log are left out. ``(None, None)`` if no run has the curve."""
  curves = [dict(metrics_log(r["workdir"], split).get(metric, [])) for r in rows
            if "workdir" in r and not r.get("diverged")]
  curves = [c for c in curves if c]
  if not curves:
    return None, None
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  return steps, [float(np.mean([c[s] for c in curves])) for s in steps]


def score_table(groups, scores, first: str = "method", n: bool = True,
                extra: tuple[str, dict] | None = None) -> list[str]:
  """One row per method of ``groups`` (``{label: rows}``): ``fmt`` of each ``(key, header)`` of
  ``scores``; ``n``: a column with the runs that did not diverge; ``extra``: ``(header,
  {label: cell})``, a last column."""
  heads = [first] + (["n"] if n else []) + [h for _, h in scores] + ([extra[0]] if extra else [])
  lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
  for name, rows in groups.items():
    div = sum(1 for r in rows if r.get("diverged"))
    cells = [name + (f" ({div} diverged)" if div else "")] + ([str(len(rows) - div)] if n else [])
    cells += [fmt([r.get(k, float("nan")) for r in rows]) for k, _ in scores]
    lines.append("| " + " | ".join(cells + ([extra[1][name]] if extra else [])) + " |")
  return lines


def paired_table(groups, reference: str, scores) -> list[str]:
  """Every method of ``groups`` minus ``reference``, paired by seed, in points: mean
  [95 % interval] (seeds ahead / n) per ``(key, header)`` of ``scores``."""
  lines = [f"| method − {reference} | n | " + " | ".join(h for _, h in scores) + " |",
           "|---|---|" + "---|" * len(scores)]
  for name, rows in groups.items():
    if name == reference:
      continue
    cells, n = [], 0
    for key, _ in scores:
      p = paired(rows, groups[reference], key)
      n = max(n, p["n"])
      interval = (f" [{100 * p['lo']:+.1f}, {100 * p['hi']:+.1f}]" if np.isfinite(p["lo"])
                  else "")
      cells.append(f"{100 * p['mean']:+.1f}{interval} ({p['ahead']}/{p['n']})")
    lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
  return lines


def alpha_table(rows) -> list[str]:
  """Per layer, over the P runs' seeds (mean): the initial state (step 1's forward pass) and
  the end of training, the side branch's relative drift, per-position change on eval images
  (``alpha_change`` of :func:`experiments.runner.run`)."""
  per_layer: dict = {}
  for r in rows:
    if r.get("diverged"):
      continue
    for metric, series in metrics_log(r["workdir"]).items():
      if not metric.startswith("alpha/"):
        continue
      layer, stat = metric[len("alpha/backbone/"):].split("/", 1)
      per_layer.setdefault(layer, {}).setdefault(stat, []).append((series[0][1], series[-1][1]))
    for layer, ch in r.get("alpha_change", {}).items():
      for k, v in ch.items():
        per_layer.setdefault(layer, {}).setdefault("eval/" + k, []).append((v, v))
  lines = ["| layer | alpha mean step 0 → end | frac < 10 step 0 → end | frac clipped end | "
           "mean abs dL/d(branch output) step 0 → end | drift end: bias / 1x1 kernel / window "
           "kernel / PReLU | eval images: mean abs Δalpha (p99) |", "|---|---|---|---|---|---|---|"]
  for layer, st in sorted(per_layer.items()):
    f = lambda k, i: float(np.mean([v[i] for v in st[k]])) if k in st else float("nan")
    drift = " / ".join(f"{f('drift/' + k, 1):.1e}" for k in (
        "conv_alpha/bias", "conv_alpha/kernel", "conv_window/kernel", "prelu/slope"))
    lines.append(
        f"| {layer} | {f('mean', 0):.2f} → {f('mean', 1):.2f} | {f('frac_below_10', 0):.3f} → "
        f"{f('frac_below_10', 1):.3f} | {f('frac_clipped', 1):.3f} | "
        f"{f('mean_abs_grad_raw', 0):.1e} → {f('mean_abs_grad_raw', 1):.1e} | {drift} | "
        f"{f('eval/mean_abs_change', 0):.3f} ({f('eval/p99_abs_change', 0):.2f}) |")
  return lines


def machine() -> str:
  from experiments.bench.timing import host_cpu
  return f"{host_cpu()}, no GPU"


def command(module: str, flags) -> str:
  """``python -m experiments.<module> <flags>``: the invocation a report quotes (run from the
  repository root); empty flags are left out."""
  return " ".join([f"python -m experiments.{module}"] + [f.strip() for f in flags if f.strip()])


def out_flag(out: str, name: str) -> str:
  """``--out PATH`` for a report written to ``out``, "" for the default
  ``experiments/results/<name>``; a path inside the repository is given relative to it."""
  out = os.path.abspath(out)
  if out == os.path.join(RESULTS, name):
    return ""
  root = os.path.dirname(os.path.dirname(RESULTS))
  inside = os.path.commonpath([out, root]) == root
  return f"--out {os.path.relpath(out, root) if inside else out}"


def preserved_analysis(out: str) -> str:
  """The "## Analysis" section (to the end) of the existing report ``out``, else a placeholder."""
  if not os.path.exists(out):
    return ANALYSIS_PLACEHOLDER
  with open(out) as f:
    text = f.read()
  i = text.find(ANALYSIS)
  return text[i:] if i >= 0 else ANALYSIS_PLACEHOLDER


def write(out: str, lines) -> None:
  """Writes ``lines`` to ``out``, followed by the hand-written analysis of the report it
  replaces (:func:`preserved_analysis`)."""
  text = "\n".join(lines).rstrip("\n") + "\n\n" + preserved_analysis(out)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    f.write(text)
