"""Evaluates a class layer's labels against class names (paper Tables 1, 3).

Usage:
  python scripts/evaluate.py --results_dir=results/rn50 --layer=fc \
      --class_names=../shared/data/concepts/imagenet_labels.txt \
      --similarity_fns=all --clip_embedder=cached+clip --sentence_model=\
sentence-transformers/all-mpnet-base-v2

Writes evaluation.csv/.json and evaluation_neurons.csv to --out_dir (default
<results_dir>/analysis) and prints the table.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# sentence-transformers needs transformers with PyTorch, which jax_dissect.clip
# turns off unless USE_TORCH is set: set it before anything imports them.
if any(a.startswith("--sentence_model=") and a.split("=", 1)[1]
       for a in sys.argv):
  os.environ.setdefault("USE_TORCH", "1")
# pylint: disable=g-import-not-at-top
from jax_dissect import evaluate
from jax_dissect import results_dir
from jax_dissect import script_errors
from jax_dissect import text_embed

_RESULTS = flags.DEFINE_string("results_dir", None, "describe_neurons output.")
_LAYER = flags.DEFINE_string("layer", None,
                             "Class layer (default: the last layer).")
_CLASS_NAMES = flags.DEFINE_string(
    "class_names", None, "File of class names, one per line, class order.")
_FIRST_SYNONYM = flags.DEFINE_bool(
    "first_synonym", False, "Keep only the text before the first comma of "
    "each class name.")
_FNS = flags.DEFINE_list(
    "similarity_fns", [], "Kernels to compare, or 'all' (default: the run's).")
_CLIP = flags.DEFINE_enum(
    "clip_embedder", "cached+clip", [*text_embed.EMBEDDER_KINDS[:3], "none"],
    "CLIP text space for the cos_clip column: cached concept embeddings, "
    "CLIP's text tower, or both; 'none' skips it.")
_CLIP_MODEL = flags.DEFINE_string(
    "clip_model", None, "CLIP hub id or dir (default: the run's).")
_SENTENCE = flags.DEFINE_string(
    "sentence_model", "", "sentence-transformers model for the cos_sentence "
    "column (e.g. sentence-transformers/all-mpnet-base-v2; needs the "
    "'sentence' extra); empty skips it.")
_EMBED_FN = flags.DEFINE_string(
    "text_embed_fn", None, "module:function, a custom CLIP-space embedder "
    "(list[str] -> (n, D) normalised) used instead of --clip_embedder.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of rank_reorder's key.")
_OUT = flags.DEFINE_string("out_dir", None,
                           "Output dir (default <results_dir>/analysis).")
flags.mark_flags_as_required(["results_dir", "class_names"])


def main(argv):
  del argv
  results = results_dir.load_results(_RESULTS.value)
  names = (list(evaluate.ALL_SIMILARITY_FNS) if _FNS.value == ["all"]
           else _FNS.value or None)
  embedders = {}
  if _EMBED_FN.value:
    embedders["clip"] = text_embed.import_callable(_EMBED_FN.value)
  elif _CLIP.value != "none":
    embedders["clip"] = text_embed.make_text_embedder(
        _CLIP.value, results, _CLIP_MODEL.value)
  if _SENTENCE.value:
    embedders["sentence"] = text_embed.make_text_embedder(
        "sentence", model=_SENTENCE.value)
  table, rows = evaluate.evaluate_layer(
      results, _LAYER.value or results.layers[-1],
      evaluate.read_class_names(_CLASS_NAMES.value, _FIRST_SYNONYM.value),
      similarity_names=names, embedders=embedders, seed=_SEED.value)
  paths = evaluate.write_evaluation(
      table, rows, results_dir.analysis_dir(results, _OUT.value))
  print(evaluate.format_table(table))
  logging.info("wrote %s", paths)


if __name__ == "__main__":
  app.run(script_errors.one_line_errors(main))
