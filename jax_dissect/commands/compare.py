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

from absl import flags

from jax_dissect.commands import common

_FLAGS = (
    ("list", "results_dirs", [], "Two or more describe_neurons results "
     "directories, in order (a series: training order)."),
    ("string", "out_dir", None, "Output directory (created)."),
    ("list", "names", [], "A name per run (default: the directories' "
     "names)."),
    ("list", "layers", [], "Layers to compare (default: those every run "
     "has)."),
    ("float", "tau", None, "Interpretable if score > tau (default: the "
     "similarity function's published tau, 0.16 for soft_wpmi)."),
    ("float", "alpha", None, "Also: interpretable if the label's q-value < "
     "alpha (scoring analysis)."),
    ("list", "accuracies", [], "A test accuracy per run, to plot profiles "
     "against (default: config.json 'accuracy')."),
    ("string", "categorizer", "clip", "The profile's categorizer: clip, "
     "table, llm or llm_json."),
    ("string", "category_table", "", "label<TAB>category file "
     "(categorizer=table)."),
    ("string", "llm", "", "Language model of categorizer=llm / llm_json: "
     "package.module:function, a hub id or a local Flax LM."),
    ("string", "text_embed_fn", "", "package.module:function, a custom "
     "text embedder of the clip categorizer."),
    ("string", "title", None, "Page title."),
)


define_flags = common.flag_table_definer(_FLAGS)


def help_notes() -> list[str]:
  return []


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if len(FLAGS.results_dirs) < 2:
    raise ValueError("--results_dirs needs two or more results directories, "
                     "comma-separated")
  if not FLAGS.out_dir:
    raise ValueError("--out_dir is required: where the tables, charts and "
                     "compare.html go")
  try:
    accuracies = [float(a) for a in FLAGS.accuracies]
  except ValueError as e:
    raise ValueError(f"--accuracies={','.join(FLAGS.accuracies)} must be "
                     "numbers, one per run") from e
  plugin = any(":" in v for v in (FLAGS.llm, FLAGS.text_embed_fn))
  common.setup_environment(needs_torch=plugin)
  from jax_dissect.analyses import _compare  # pylint: disable=g-import-not-at-top
  from jax_dissect.report import compare as page  # pylint: disable=g-import-not-at-top
  from jax_dissect.store import results as results_lib  # pylint: disable=g-import-not-at-top
  runs = [results_lib.load_run(d) for d in FLAGS.results_dirs]
  profile_options = {"categorizer": FLAGS.categorizer}
  for key in ("category_table", "llm", "text_embed_fn"):
    if FLAGS[key].value:
      profile_options[key] = FLAGS[key].value
  comparison = _compare.compare_runs(
      runs, FLAGS.names or None, layers=FLAGS.layers or None,
      profile_options=profile_options, tau=FLAGS.tau, alpha=FLAGS.alpha,
      accuracies=accuracies or None)
  _compare.write_comparison(comparison, FLAGS.out_dir)
  path = page.build_compare_page(FLAGS.out_dir,
                                 run_dirs=list(FLAGS.results_dirs),
                                 title=FLAGS.title)
  for note in comparison.notes:
    print(f"note: {note}")
  for line in comparison.summary:
    print(line)
  print(path)


def run(argv: list[str] | None = None) -> None:
  """Parses the flags and runs; exits with the command's status."""
  common.run_command(define_flags, main, argv)
