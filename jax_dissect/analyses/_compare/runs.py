"""Two or more runs side by side: profiles, label agreement, matched
neurons, a trend over an ordered series (checkpoints), profile vs accuracy.

Not an analysis of one run (the analysis contract takes one); the
`jax-dissect compare` command (jax_dissect.commands.compare) calls
`compare_runs` and `write_comparison`, and jax_dissect.report.compare draws
the page.

What applies depends on what the runs share, said in `Comparison.notes`
(one line each):

- profiles (category shares, interpretable share at tau and at q < alpha)
  apply to any runs: each run's profile comes from the profile analysis
  with the same options;
- label agreement (unit i against unit i) and matches by label need the
  same concept set (and, for agreement, the same number of units);
- matches by activation correlation need the same probe images (the same
  image ids in the same order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import os
from typing import Any

from absl import logging
import numpy as np
from scipy import stats

from jax_dissect import analyses
from jax_dissect.analyses._compare import matching
from jax_dissect.analyses.profile import layer_profile
from jax_dissect.store import files
from jax_dissect.store import results as results_lib

MANIFEST = "comparison.json"
MAX_SAME_LABEL_UNITS = 10  # Units of B listed per neuron of A in matches.


@dataclasses.dataclass
class Comparison:
  """What compare_runs found.

  Attributes:
    names: the runs' names, in the order given (the trend's order).
    layers: the layers compared (those all runs have).
    categories: the profile categories.
    tables: stem -> rows (written as <stem>.csv).
    captions: stem -> what the table or chart is.
    charts: stem -> draw(path) writing a PNG.
    notes: one line each on what does not apply and why.
    summary: lines for the terminal.
  """
  names: list[str]
  layers: list[str]
  categories: tuple[str, ...]
  tables: dict[str, list[dict[str, Any]]]
  captions: dict[str, str]
  charts: dict[str, Callable[[str], Any]]
  notes: list[str]
  summary: list[str]


def _run_names(runs: Sequence[results_lib.Run],
               names: Sequence[str] | None) -> list[str]:
  if names:
    if len(names) != len(runs):
      raise ValueError(f"names has {len(names)} entries for {len(runs)} runs")
    out = [str(n) for n in names]
  else:
    out = [os.path.basename(os.path.normpath(r.path)) or r.path for r in runs]
  if len(set(out)) != len(out):  # Same folder names: number them.
    out = [f"{i}:{n}" for i, n in enumerate(out)]
  return out


def _shared_layers(runs: Sequence[results_lib.Run],
                   layers: Sequence[str] | None, notes: list[str]
                   ) -> list[str]:
  if layers:
    for run in runs:
      for layer in layers:
        run.check_layer(layer)
    return list(layers)
  shared = [l for l in runs[0].layers if all(l in r.layers for r in runs)]
  if not shared:
    raise ValueError("the runs share no layer name; pass layers= naming "
                     "layers every run has ("
                     + "; ".join(f"{r.path}: {', '.join(r.layers)}"
                                 for r in runs) + ")")
  others = sorted({l for r in runs for l in r.layers} - set(shared))
  if others:
    notes.append(f"layers not in every run are left out: {', '.join(others)}")
  return shared


def _accuracies(runs: Sequence[results_lib.Run],
                accuracies: Sequence[float] | None) -> list[float | None]:
  if accuracies:
    if len(accuracies) != len(runs):
      raise ValueError(f"accuracies has {len(accuracies)} values for "
                       f"{len(runs)} runs")
    return [float(a) for a in accuracies]
  out = []
  for run in runs:
    value = run.config.get("accuracy")
    out.append(None if value is None else float(value))
  return out


def _profile_rows(run: results_lib.Run, name: str, layers: list[str],
                  profile_options: Mapping[str, Any], alpha: float | None,
                  tau: float | None) -> tuple[list[dict[str, Any]],
                                              tuple[str, ...], float]:
  options = dict(profile_options)
  if alpha is not None:
    options["alpha"] = alpha
  if tau is not None:
    options["tau"] = tau
  output = analyses.run("profile", run, layers=tuple(layers), **options)
  doc = output.documents["profile"]
  categories = tuple(doc["categories"])
  run_tau = (tau if tau is not None else
             layer_profile.DEFAULT_TAU.get(run.similarity_fn, doc["tau"]))
  rows = []
  for row in output.tables["profile"].rows:
    neurons = run.layer_neurons(row["layer"])
    scores = np.asarray([n.similarity for n in neurons])
    rows.append({
        "run": name, "layer": row["layer"], "n_neurons": row["n_neurons"],
        "similarity_fn": run.similarity_fn, "tau": run_tau,
        "interpretable_tau": 100.0 * float(np.mean(scores > run_tau)),
        "alpha": alpha,
        "interpretable_q": (100.0 * row["interpretable_fraction"]
                            if alpha is not None else None),
        "mean_similarity": float(np.mean(scores)),
        **{f"percent_{c}": row[f"percent_{c}"] for c in categories}})
  return rows, categories, run_tau


def _pairs(n: int) -> list[tuple[int, int]]:
  """Consecutive runs, and the first with the last when there are more
  than two (a series' start against its end)."""
  pairs = [(i, i + 1) for i in range(n - 1)]
  if n > 2:
    pairs.append((0, n - 1))
  return pairs


def _pair_rows(run_a: results_lib.Run, run_b: results_lib.Run, name_a: str,
               name_b: str, layer: str, same_concepts: bool,
               same_probe: bool) -> tuple[dict[str, Any],
                                          list[dict[str, Any]]]:
  labels_a = [n.description for n in run_a.layer_neurons(layer)]
  labels_b = [n.description for n in run_b.layer_neurons(layer)]
  same_units = len(labels_a) == len(labels_b)
  row: dict[str, Any] = {"run_a": name_a, "run_b": name_b, "layer": layer,
                         "n_a": len(labels_a), "n_b": len(labels_b),
                         "label_agreement": None, "jaccard": None,
                         "a_in_b": None, "mean_best_correlation": None,
                         "identity_match": None,
                         "best_match_same_label": None}
  same_label: list[list[int]] | None = None
  if same_concepts:
    if same_units:
      row["label_agreement"] = matching.label_agreement(labels_a, labels_b)
    overlap = matching.label_overlap(labels_a, labels_b)
    row["jaccard"], row["a_in_b"] = overlap["jaccard"], overlap["a_in_b"]
    same_label = matching.matches_by_label(labels_a, labels_b)
  best = corr = None
  if same_probe:
    c = matching.correlation_matrix(run_a.activations(layer),
                                     run_b.activations(layer))
    best, corr = matching.best_matches(c)
    row["mean_best_correlation"] = float(np.mean(corr))
    if same_units:
      row["identity_match"] = float(np.mean(best == np.arange(len(best))))
    if same_concepts:
      row["best_match_same_label"] = float(np.mean(
          [labels_a[i].lower() == labels_b[j].lower()
           for i, j in enumerate(best)]))
  matches = []
  for i, label in enumerate(labels_a):
    m: dict[str, Any] = {"run_a": name_a, "run_b": name_b, "layer": layer,
                         "unit_a": i, "label_a": label,
                         "label_b_same_unit": (labels_b[i] if same_units
                                               else None)}
    if same_label is not None:
      units = same_label[i]
      m["units_b_same_label"] = " ".join(
          str(u) for u in units[:MAX_SAME_LABEL_UNITS]) + (
              " ..." if len(units) > MAX_SAME_LABEL_UNITS else "")
      m["n_b_same_label"] = len(units)
    if best is not None:
      m["best_unit_b"] = int(best[i])
      m["best_correlation"] = float(corr[i])
      m["best_label_b"] = labels_b[int(best[i])]
    matches.append(m)
  return row, matches


def _compatibility(runs: Sequence[results_lib.Run], names: list[str],
                   notes: list[str]) -> tuple[bool, bool]:
  same_concepts = all(r.concepts == runs[0].concepts for r in runs)
  same_probe = bool(runs[0].image_ids) and all(
      r.image_ids == runs[0].image_ids for r in runs)
  if not same_concepts:
    sizes = ", ".join(f"{n}: {len(r.concepts)}" for n, r in zip(names, runs))
    notes.append(
        f"the runs' concept sets differ ({sizes} concepts): label agreement "
        "and matches by label do not apply; profiles and interpretable "
        "shares still do" + (", and matches by activation correlation"
                             if same_probe else ""))
  if not same_probe:
    notes.append("the runs' probe images differ: matches by activation "
                 "correlation do not apply" + (
                     "; profiles, label agreement and matches by label still"
                     " do" if same_concepts else ""))
  fns = {r.similarity_fn for r in runs}
  if len(fns) > 1:
    notes.append(f"the runs use different similarity functions "
                 f"({', '.join(sorted(fns))}): their scores, and so the "
                 "interpretable shares at tau, are on different scales")
  return same_concepts, same_probe


def compare_runs(runs: Sequence[results_lib.Run],
                 names: Sequence[str] | None = None, *,
                 layers: Sequence[str] | None = None,
                 profile_options: Mapping[str, Any] | None = None,
                 tau: float | None = None, alpha: float | None = None,
                 accuracies: Sequence[float] | None = None) -> Comparison:
  """Compares runs (see the module docstring).

  Args:
    runs: two or more loaded runs; their order is the trend's (e.g.
      checkpoints in training order).
    names: a name per run (default the directories' names).
    layers: layers to compare (default those every run has).
    profile_options: options of the profile analysis (categorizer,
      categories, category_table, llm, text_embedder, ...).
    tau: interpretable if score > tau (default the similarity function's
      published tau).
    alpha: also count neurons whose label's q-value < alpha (categories are
      then shares of those neurons).
    accuracies: a test accuracy per run (default: each run's config.json
      "accuracy", if any).

  Returns:
    A Comparison.
  """
  if len(runs) < 2:
    raise ValueError(f"compare needs two or more runs; got {len(runs)}")
  notes: list[str] = []
  names = _run_names(runs, names)
  layers = _shared_layers(runs, layers, notes)
  same_concepts, same_probe = _compatibility(runs, names, notes)
  accs = _accuracies(runs, accuracies)

  profiles: list[dict[str, Any]] = []
  categories: tuple[str, ...] = ()
  for run, name, acc in zip(runs, names, accs):
    logging.info("compare: profile of %s", name)
    rows, categories, _ = _profile_rows(run, name, layers,
                                        profile_options or {}, alpha, tau)
    for r in rows:
      r["accuracy"] = acc
    profiles += rows

  agreement, matches = [], []
  for i, j in _pairs(len(runs)):
    for layer in layers:
      row, m = _pair_rows(runs[i], runs[j], names[i], names[j], layer,
                          same_concepts, same_probe)
      agreement.append(row)
      matches += m
  units_differ = [r["layer"] for r in agreement
                  if r["n_a"] != r["n_b"]]
  if units_differ and same_concepts:
    notes.append(f"layers {', '.join(sorted(set(units_differ)))} have other "
                 "numbers of neurons in some runs: unit-by-unit label "
                 "agreement does not apply there")

  trend = _trend(profiles, agreement, names, layers)
  tables = {"compare_profiles": profiles, "compare_agreement": agreement,
            "compare_matches": matches}
  captions = {
      "compare_profiles": "Per-layer profiles side by side (percent of "
                          "neurons)",
      "compare_agreement": "Label agreement and matched neurons per pair of "
                           "runs",
      "compare_matches": "Each neuron's matches in the other run (by label, "
                         "by activation correlation)"}
  charts = {"compare_profiles": lambda path: _plot_profiles(
      profiles, names, layers, categories, path)}
  captions["compare_profiles.png"] = ("Category shares and interpretable "
                                      "share per layer, run by run")
  tables["compare_trend"] = trend
  captions["compare_trend"] = "The ordered runs' profiles, step by step"
  charts["compare_trend"] = lambda path: _plot_trend(trend, names, layers,
                                                     categories, path)
  captions["compare_trend.png"] = ("Interpretable share and categories "
                                   "along the ordered runs")
  if any(a is not None for a in accs):
    if any(a is None for a in accs):
      notes.append("accuracy is known for some runs only: profile against "
                   "accuracy uses those")
    acc_rows = _accuracy_rows(profiles, layers)
    tables["compare_accuracy"] = acc_rows
    captions["compare_accuracy"] = ("Interpretable share against accuracy "
                                    "(Pearson r over the runs)")
    charts["compare_accuracy"] = lambda path: _plot_accuracy(
        profiles, layers, path)
    captions["compare_accuracy.png"] = "Interpretable share against accuracy"
  summary = [f"{r['run']} {r['layer']}: {r['interpretable_tau']:.1f}% "
             f"interpretable (score > {r['tau']:g})" for r in profiles]
  summary += [f"{r['run_a']} vs {r['run_b']} {r['layer']}: label agreement "
              f"{_fmt(r['label_agreement'])}, mean best correlation "
              f"{_fmt(r['mean_best_correlation'])}" for r in agreement]
  return Comparison(names=names, layers=layers, categories=categories,
                    tables=tables, captions=captions, charts=charts,
                    notes=notes, summary=summary)


def _fmt(x: float | None) -> str:
  return "n/a" if x is None else f"{x:.3f}"


def _trend(profiles: list[dict[str, Any]], agreement: list[dict[str, Any]],
           names: list[str], layers: list[str]) -> list[dict[str, Any]]:
  """Profiles in run order with the agreement with the previous run."""
  previous = {(r["run_b"], r["layer"]): r for r in agreement
              if names.index(r["run_b"]) == names.index(r["run_a"]) + 1}
  out = []
  for step, name in enumerate(names):
    for layer in layers:
      prof = next(p for p in profiles
                  if p["run"] == name and p["layer"] == layer)
      prev = previous.get((name, layer), {})
      out.append({"step": step, **prof,
                  "agreement_with_previous": prev.get("label_agreement"),
                  "correlation_with_previous": prev.get(
                      "mean_best_correlation")})
  return out


def _accuracy_rows(profiles: list[dict[str, Any]], layers: list[str]
                   ) -> list[dict[str, Any]]:
  out = []
  for layer in layers:
    mine = [p for p in profiles if p["layer"] == layer
            and p["accuracy"] is not None]
    x = np.asarray([p["accuracy"] for p in mine])
    row: dict[str, Any] = {"layer": layer, "n_runs": len(mine)}
    for key in ("interpretable_tau", "interpretable_q"):
      y = np.asarray([np.nan if p[key] is None else p[key] for p in mine])
      ok = len(mine) >= 3 and np.all(np.isfinite(y)) and np.ptp(x) > 0 \
          and np.ptp(y) > 0
      r, pv = stats.pearsonr(x, y) if ok else (None, None)
      row[f"r_{key}"] = None if r is None else float(r)
      row[f"p_{key}"] = None if pv is None else float(pv)
    out.append(row)
  return out


# ----------------------------------------------------------------------------
# Charts.


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _plot_profiles(profiles, names, layers, categories, path) -> str:
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.6),
                           sharey=True, squeeze=False)
  width = 0.8 / len(names)
  colors = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
  x = np.arange(len(categories) + 1)
  for ax, layer in zip(axes[0], layers):
    for i, name in enumerate(names):
      p = next(r for r in profiles if r["run"] == name and
               r["layer"] == layer)
      values = [p[f"percent_{c}"] for c in categories] + [
          p["interpretable_tau"]]
      ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width,
             color=colors[i], label=name)
    ax.set_xticks(x, list(categories) + ["interpretable"], rotation=60,
                  ha="right", fontsize=8)
    ax.set_title(layer, fontsize=9)
  axes[0][0].set_ylabel("% of neurons")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _plot_trend(trend, names, layers, categories, path) -> str:
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.4),
                           sharey=True, squeeze=False)
  steps = np.arange(len(names))
  for ax, layer in zip(axes[0], layers):
    mine = [r for r in trend if r["layer"] == layer]
    ax.plot(steps, [r["interpretable_tau"] for r in mine], marker="o",
            color="black", linewidth=2, label="interpretable")
    for c in categories:
      ax.plot(steps, [r[f"percent_{c}"] for r in mine], marker=".",
              linewidth=1, label=c)
    ax.set_xticks(steps, names, rotation=45, ha="right", fontsize=7)
    ax.set_title(layer, fontsize=9)
  axes[0][0].set_ylabel("% of neurons")
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _plot_accuracy(profiles, layers, path) -> str:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for layer in layers:
    mine = [p for p in profiles if p["layer"] == layer and
            p["accuracy"] is not None]
    ax.plot([p["accuracy"] for p in mine],
            [p["interpretable_tau"] for p in mine], marker="o", label=layer)
    for p in mine:
      ax.annotate(p["run"], (p["accuracy"], p["interpretable_tau"]),
                  fontsize=6)
  ax.set_xlabel("accuracy")
  ax.set_ylabel("% interpretable neurons")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------
# Writing.


def write_comparison(comparison: Comparison, out_dir: str) -> dict[str, str]:
  """Writes the tables (CSV), charts (PNG) and MANIFEST into `out_dir`.

  The manifest lists the runs, layers, notes and every file with its
  caption, for the page (jax_dissect.report.compare).

  Returns:
    {file name: path}.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths: dict[str, str] = {}
  entries = []
  for stem, rows in comparison.tables.items():
    name = f"{stem}.csv"
    paths[name] = files.write_csv(os.path.join(out_dir, name), rows)
    entries.append({"file": name, "kind": "table",
                    "caption": comparison.captions.get(stem, "")})
  for stem, draw in comparison.charts.items():
    name = f"{stem}.png"
    paths[name] = files.write_with(os.path.join(out_dir, name), draw)
    entries.append({"file": name, "kind": "chart",
                    "caption": comparison.captions.get(name, "")})
  paths[MANIFEST] = files.write_json(
      os.path.join(out_dir, MANIFEST),
      {"runs": comparison.names, "layers": comparison.layers,
       "categories": list(comparison.categories),
       "notes": comparison.notes, "outputs": entries}, indent=2)
  return paths
