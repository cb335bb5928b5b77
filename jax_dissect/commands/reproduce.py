"""`jax-dissect reproduce`: a paper's table, run and set beside its numbers.

  # The paper's setting (real weights and data):
  jax-dissect reproduce --table=table3 --work_dir=repro \
      --concepts_dir=data \
      --sentence_model=sentence-transformers/all-mpnet-base-v2 \
      --set=tfds_manual_dir=/data/imagenet,broden_dir=/data/broden
  # Offline, on random models (minutes on a CPU; tests the plumbing):
  jax-dissect reproduce --table=all --smoke --work_dir=/tmp/repro \
      --concepts_dir=../shared/data/concepts \
      --smoke_photos=../shared/data/imagenet_sample \
      --clip_tokenizer=../shared/data/clip_bpe/bpe_simple_vocab_16e6.txt.gz

Tables: table1, table2, table3 (CLIP-Dissect, ICLR 2023), stability (the
stability paper's score table and bar chart), profile (the profiling
paper's Figures 3 and 4), or all. Each writes <out_dir>/<table>.csv (ours
and the paper's numbers, <metric>_paper), <table>.md (the paper's layout,
"ours (paper)" per cell, with notes) and its charts; the runs and the cache
stay in --work_dir, so tables share runs and a second call computes only
what is new. jax_dissect.pipeline.reproduce documents the settings.
"""

from __future__ import annotations

import os

from absl import flags

from jax_dissect.commands import common

_FLAGS = (
    ("string", "table", None, "table1, table2, table3, stability, profile, "
     "or all."),
    ("string", "work_dir", "reproduce", "Runs, cache and derived files."),
    ("string", "out_dir", None, "Tables and charts (default "
     "<work_dir>/tables)."),
    ("string", "concepts_dir", None, "The concept sets (20k.txt, 10k.txt, "
     "3k.txt, broden_labels_clean.txt, imagenet_labels.txt, "
     "categories_places365.txt; default $JAX_DISSECT_SHARED_DATA/concepts, "
     "else data)."),
    ("bool", "smoke", False, "The offline smoke setting: random models on a "
     "folder of photos."),
    ("list", "set", [], "describe_neurons options for every run, key=value "
     "(e.g. broden_dir=/data/broden)."),
    ("list", "weights", [], "model=weights for target models (e.g. "
     "resnet18_places365=/data/rn18.pth.tar)."),
    ("string", "sentence_model", "", "sentence-transformers model of the "
     "mpnet columns (the paper's: sentence-transformers/all-mpnet-base-v2); "
     "empty skips them."),
    ("string", "categorizer", "clip", "Profile categorizer (profile "
     "table)."),
    ("string", "llm", "", "Language model of categorizer=llm_json."),
    ("string", "smoke_photos", None, "Smoke: a folder of photos (default "
     "<concepts_dir>/../imagenet_sample)."),
    ("integer", "smoke_images", 40, "Smoke: images per probe set "
     "(rank_reorder needs 40)."),
    ("integer", "smoke_concepts", 40, "Smoke: concepts kept of each set."),
    ("string", "clip_tokenizer", None, "Smoke: CLIP's BPE file (default "
     "<concepts_dir>/../clip_bpe/bpe_simple_vocab_16e6.txt.gz)."),
)


define_flags = common.flag_table_definer(_FLAGS)


def help_notes() -> list[str]:
  return []


FLAGS = flags.FLAGS


def _pairs(values: list[str], flag: str) -> dict[str, str]:
  out = {}
  for item in values:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"--{flag} item {item!r} is not key=value")
    out[key.strip()] = value.strip()
  return out


def _typed(config_value, text: str):
  """A --set value in the type of the option's default."""
  if isinstance(config_value, bool):
    return text.lower() in ("1", "true", "yes")
  if isinstance(config_value, int):
    return int(text)
  if isinstance(config_value, float):
    return float(text)
  return text


def main(argv):
  del argv
  common.setup_environment(needs_torch=bool(FLAGS.sentence_model)
                           or ":" in FLAGS.llm)
  from jax_dissect.pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from jax_dissect.pipeline import reproduce  # pylint: disable=g-import-not-at-top
  if not FLAGS.table:
    raise ValueError("--table is required: one of "
                     f"{', '.join(reproduce.TABLES)}, or all")
  names = (list(reproduce.TABLES) if FLAGS.table == "all"
           else [reproduce.check_table(FLAGS.table)])
  shared = os.environ.get("JAX_DISSECT_SHARED_DATA")
  concepts_dir = FLAGS.concepts_dir or (os.path.join(shared, "concepts")
                                     if shared else "data")
  if not os.path.isdir(concepts_dir):
    raise ValueError(f"--concepts_dir={concepts_dir!r} is not a directory")
  data_root = os.path.dirname(os.path.abspath(concepts_dir))
  defaults = config_lib.default_config()
  overrides = {}
  for key, value in _pairs(FLAGS.set, "set").items():
    if key not in defaults:
      raise ValueError(f"--set {key}: not a describe_neurons option")
    try:
      overrides[key] = _typed(defaults[key], value)
    except ValueError as e:
      raise ValueError(f"--set {key}={value!r}: {e}") from e
  profile_options = {"categorizer": FLAGS.categorizer}
  if FLAGS.llm:
    profile_options["llm"] = FLAGS.llm
  setting = reproduce.Setting(
      work_dir=FLAGS.work_dir, concepts_dir=concepts_dir, smoke=FLAGS.smoke,
      overrides=overrides, weights=_pairs(FLAGS.weights, "weights"),
      sentence_model=FLAGS.sentence_model, profile_options=profile_options,
      smoke_photos=FLAGS.smoke_photos or os.path.join(data_root,
                                                 "imagenet_sample"),
      smoke_images=FLAGS.smoke_images, smoke_concepts=FLAGS.smoke_concepts,
      clip_tokenizer=FLAGS.clip_tokenizer or os.path.join(
          data_root, "clip_bpe", "bpe_simple_vocab_16e6.txt.gz"))
  runner = reproduce.Runner(setting)
  out_dir = FLAGS.out_dir or os.path.join(FLAGS.work_dir, "tables")
  for name in names:
    result = reproduce.reproduce_table(name, setting, runner)
    paths = reproduce.write_table(result, out_dir)
    print(f"# {result.title}")
    print(result.markdown)
    for note in result.notes:
      print(f"note: {note}")
    print(paths[f"{name}.md"])


def run(argv: list[str] | None = None) -> None:
  """Parses the flags and runs; exits with the command's status."""
  common.run_command(define_flags, main, argv)
