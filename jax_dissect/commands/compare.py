"""`jax-dissect compare`: two or more runs side by side, or a series.

  jax-dissect compare --results_dirs=results/rn50,results/rn50_ft \
      --out_dir=results/compare
  # A series of checkpoints, in training order, with their accuracies:
  jax-dissect compare --results_dirs=ckpt/step1000,ckpt/step2000,... \
      --accuracies=0.61,0.68,0.71 --out_dir=results/trend --alpha=0.05

Writes into --out_dir: compare_profiles.csv/.png (per-layer category and
interpretable shares, run by run), compare_agreement.csv (per pair of runs
and layer: label agreement, vocabulary overlap, matched neurons by
activation correlation), compare_matches.csv (each neuron's matches),
compare_trend.csv/.png (the runs in the order given), compare_accuracy.csv/
.png (when accuracies are known: --accuracies or each run's config.json
"accuracy"), comparison.json and the page compare.html. What does not apply
to the given runs (other concept sets, other probe images) is one line each,
printed and on the page.
"""

from __future__ import annotations

from absl import app
from absl import flags

from jax_dissect.commands import common

_DIRS = flags.DEFINE_list("results_dirs", [], "Two or more describe_neurons "
                          "results directories, in order (a series: "
                          "training order).", module_name=common.flag_module())
_OUT = flags.DEFINE_string("out_dir", None, "Output directory (created).",
                           module_name=common.flag_module())
_NAMES = flags.DEFINE_list("names", [], "A name per run (default: the "
                           "directories' names).",
                           module_name=common.flag_module())
_LAYERS = flags.DEFINE_list("layers", [], "Layers to compare (default: those "
                            "every run has).", module_name=common.flag_module())
_TAU = flags.DEFINE_float("tau", None, "Interpretable if score > tau "
                          "(default: the similarity function's published "
                          "tau, 0.16 for soft_wpmi).",
                          module_name=common.flag_module())
_ALPHA = flags.DEFINE_float("alpha", None, "Also: interpretable if the "
                            "label's q-value < alpha (scoring analysis).",
                            module_name=common.flag_module())
_ACC = flags.DEFINE_list("accuracies", [], "A test accuracy per run, to plot "
                         "profiles against (default: config.json "
                         "'accuracy').", module_name=common.flag_module())
_CATEGORIZER = flags.DEFINE_string(
    "categorizer", "clip", "The profile's categorizer: clip, table, llm or "
    "llm_json.", module_name=common.flag_module())
_TABLE = flags.DEFINE_string("category_table", "", "label<TAB>category file "
                             "(categorizer=table).",
                             module_name=common.flag_module())
_LLM = flags.DEFINE_string("llm", "", "Language model of categorizer=llm / "
                           "llm_json: package.module:function, a hub id or a "
                           "local Flax LM.", module_name=common.flag_module())
_EMBED = flags.DEFINE_string("text_embed_fn", "", "package.module:function, "
                             "a custom text embedder of the clip "
                             "categorizer.", module_name=common.flag_module())
_TITLE = flags.DEFINE_string("title", None, "Page title.",
                             module_name=common.flag_module())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if len(_DIRS.value) < 2:
    raise ValueError("--results_dirs needs two or more results directories, "
                     "comma-separated")
  if not _OUT.value:
    raise ValueError("--out_dir is required: where the tables, charts and "
                     "compare.html go")
  try:
    accuracies = [float(a) for a in _ACC.value]
  except ValueError as e:
    raise ValueError(f"--accuracies={','.join(_ACC.value)} must be numbers, "
                     "one per run") from e
  plugin = any(":" in v for v in (_LLM.value, _EMBED.value))
  common.setup_environment(needs_torch=plugin)
  from jax_dissect.analyses import _compare  # pylint: disable=g-import-not-at-top
  from jax_dissect.report import compare as page  # pylint: disable=g-import-not-at-top
  from jax_dissect.store import results as results_lib  # pylint: disable=g-import-not-at-top
  runs = [results_lib.load_run(d) for d in _DIRS.value]
  profile_options = {"categorizer": _CATEGORIZER.value}
  for key, flag in (("category_table", _TABLE), ("llm", _LLM),
                    ("text_embed_fn", _EMBED)):
    if flag.value:
      profile_options[key] = flag.value
  comparison = _compare.compare_runs(
      runs, _NAMES.value or None, layers=_LAYERS.value or None,
      profile_options=profile_options, tau=_TAU.value, alpha=_ALPHA.value,
      accuracies=accuracies or None)
  _compare.write_comparison(comparison, _OUT.value)
  path = page.build_compare_page(_OUT.value, run_dirs=list(_DIRS.value),
                                 title=_TITLE.value)
  for note in comparison.notes:
    print(f"note: {note}")
  for line in comparison.summary:
    print(line)
  print(path)


def run(argv=None):
  app.run(common.one_line_errors(main), argv=argv)
