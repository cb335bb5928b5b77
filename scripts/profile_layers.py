"""Layer-wise network profile: label categories and interpretable fraction.

Usage:
  python scripts/profile_layers.py --results_dir=results/rn50 \
      --categorizer=clip            # CLIP zero-shot on the label text
  python scripts/profile_layers.py --results_dir=results/rn50 \
      --categorizer=table --category_table=broden_categories.tsv
  python scripts/profile_layers.py --results_dir=results/rn50 \
      --categorizer=llm --llm=my_package.my_module:ask   # str -> str callable

Writes profile.csv/.json, profile_neurons.csv, interpretable_vs_tau.csv,
profile.png and interpretable_vs_tau.png to --out_dir (default
<results_dir>/analysis).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from jax_dissect import profile
from jax_dissect import results_dir
from jax_dissect import script_errors
from jax_dissect import text_embed

_RESULTS = flags.DEFINE_string("results_dir", None, "describe_neurons output.")
_CATEGORIZER = flags.DEFINE_enum("categorizer", "clip",
                                 ["clip", "table", "llm"],
                                 "How labels are mapped to categories.")
_CATEGORIES = flags.DEFINE_list("categories",
                                list(profile.DEFAULT_CATEGORIES),
                                "Allowed categories.")
_TABLE = flags.DEFINE_string(
    "category_table", None, "label<TAB>category file (--categorizer=table).")
_LLM = flags.DEFINE_string(
    "llm", None, "module:function, a callable prompt -> answer "
    "(--categorizer=llm); the prompt is profile.LLM_PROMPT.")
_CLIP = flags.DEFINE_enum("clip_embedder", "cached+clip",
                          text_embed.EMBEDDER_KINDS[:3],
                          "Text embedder of --categorizer=clip.")
_CLIP_MODEL = flags.DEFINE_string("clip_model", None,
                                  "CLIP hub id or dir (default: the run's).")
_EMBED_FN = flags.DEFINE_string(
    "text_embed_fn", None, "module:function, a custom embedder for "
    "--categorizer=clip, used instead of --clip_embedder.")
_MIN_COS = flags.DEFINE_float(
    "min_cosine", None, "--categorizer=clip: a label whose best category "
    "cosine is below this is 'unknown'.")
_TAU = flags.DEFINE_float(
    "tau", None, "Interpretable if score > tau (default: 0.16 for soft_wpmi).")
_LAYERS = flags.DEFINE_list("layers", [], "Layers (default: all).")
_OUT = flags.DEFINE_string("out_dir", None,
                           "Output dir (default <results_dir>/analysis).")
flags.mark_flag_as_required("results_dir")


def _categorizer(results):
  if _CATEGORIZER.value == "table":
    if not _TABLE.value:
      raise app.UsageError("--categorizer=table needs --category_table")
    return profile.TableCategorizer.from_file(_TABLE.value, _CATEGORIES.value)
  if _CATEGORIZER.value == "llm":
    if not _LLM.value:
      raise app.UsageError("--categorizer=llm needs --llm=module:function")
    return profile.LLMCategorizer(text_embed.import_callable(_LLM.value),
                                  _CATEGORIES.value)
  embed = (text_embed.import_callable(_EMBED_FN.value) if _EMBED_FN.value
           else text_embed.make_text_embedder(_CLIP.value, results,
                                              _CLIP_MODEL.value))
  return profile.ClipZeroShotCategorizer(embed, _CATEGORIES.value,
                                         min_cosine=_MIN_COS.value)


def main(argv):
  del argv
  results = results_dir.load_results(_RESULTS.value)
  prof = profile.profile_results(results, _categorizer(results),
                                 tau=_TAU.value, layers=_LAYERS.value or None)
  paths = profile.write_profile(prof,
                                results_dir.analysis_dir(results, _OUT.value))
  for row in prof.layers:
    logging.info("%s: %d/%d interpretable", row["layer"],
                 row["n_interpretable"], row["n_neurons"])
  logging.info("wrote %s", paths)


if __name__ == "__main__":
  app.run(script_errors.one_line_errors(main))
