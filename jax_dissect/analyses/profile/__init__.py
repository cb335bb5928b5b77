"""Layer-wise network profile: label categories and interpretable fraction.

  python scripts/analyze.py --analysis=profile --results_dir=results/rn50 \
      --categorizer=clip          # CLIP zero-shot on the label text
  ... --categorizer=table --category_table=broden_categories.tsv
  ... --categorizer=llm --llm=my_package.my_module:ask   # str -> str
  ... --categorizer=llm_json --llm=HuggingFaceTB/SmolLM2-1.7B-Instruct

  ... --alpha=0.05   # interpretable: the label's q-value < 0.05

Each label gets a category (jax_dissect.analyses.profile.layer_profile's
categorizers; llm_json is the profiling paper's: one worked example, many
labels per prompt, a JSON mapping back, jax_dissect.analyses.profile.
llm_mapping); the llm of llm and llm_json is package.module:function, a hub
id or a local directory of a Flax language model. A neuron is interpretable when its score > tau (0.16 for
soft_wpmi) or, with alpha set, when its label's permutation q-value < alpha
(read from the scoring analysis' explanation_scores.csv when it covers the
layers, else computed with the scoring analysis' defaults). Writes profile.csv/
.json (per layer), profile_neurons.csv, interpretable_vs_tau.csv and the charts
profile.png and interpretable_vs_tau.png.
"""

from __future__ import annotations

import os

from absl import logging
import ml_collections

from jax_dissect import analyses
from jax_dissect.analyses import scoring as scoring_analysis
from jax_dissect.analyses.profile import layer_profile as profile_lib
from jax_dissect.analyses.profile import llm_mapping
from jax_dissect.analyses.profile.layer_profile import ClipZeroShotCategorizer
from jax_dissect.analyses.profile.layer_profile import DEFAULT_CATEGORIES
from jax_dissect.analyses.profile.layer_profile import default_tau
from jax_dissect.analyses.profile.layer_profile import LLMCategorizer
from jax_dissect.analyses.profile.layer_profile import Profile
from jax_dissect.analyses.profile.layer_profile import profile_neurons
from jax_dissect.analyses.profile.layer_profile import TableCategorizer
from jax_dissect.analyses.profile.llm_mapping import build_prompt
from jax_dissect.analyses.profile.llm_mapping import MappingLLMCategorizer
from jax_dissect.analyses.profile.llm_mapping import parse_mapping
from jax_dissect.clip import text_embed
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "build_prompt", "CATEGORIZERS", "ClipZeroShotCategorizer",
    "DEFAULT_CATEGORIES", "default_tau", "DESCRIPTION", "get_config",
    "label_q_values", "LLMCategorizer", "MappingLLMCategorizer", "NAME",
    "parse_mapping", "Profile", "profile_neurons", "run", "TableCategorizer",
]

NAME = "profile"
DESCRIPTION = "Per-layer categories of the labels and interpretable share."
CATEGORIZERS = ("clip", "table", "llm", "llm_json")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.categorizer = "clip"  # clip | table | llm | llm_json.
  c.categories = profile_lib.DEFAULT_CATEGORIES
  c.category_table = ""  # label<TAB>category file (categorizer=table).
  # Language model of categorizer=llm (one label per prompt) and llm_json
  # (the profiling paper's JSON mapping): package.module:function (prompt ->
  # answer), a hub id or a local directory of a Flax LM.
  c.llm = ""
  c.llm_batch_size = llm_mapping.DEFAULT_BATCH_SIZE  # Labels per prompt.
  # Answer length of a loaded LM (llm_json needs room for a JSON object).
  c.llm_max_new_tokens = llm_mapping.DEFAULT_MAX_NEW_TOKENS
  text_embed.add_options(c, "cached+clip")  # categorizer=clip's embedder.
  # categorizer=clip: a label whose best category cosine is below this is
  # 'unknown'.
  c.min_cosine = ml_collections.config_dict.placeholder(float)
  # Interpretable if score > tau (default: the published value of the run's
  # similarity function, 0.16 for soft_wpmi).
  c.tau = ml_collections.config_dict.placeholder(float)
  # Interpretable if the label's q-value < alpha instead (from
  # analysis/explanation_scores.csv, or computed by the scoring analysis).
  c.alpha = ml_collections.config_dict.placeholder(float)
  c.layers = ()  # Layers (default: all).
  return c


def _categorizer(results: results_lib.Run, config):
  options.choice("categorizer", config.categorizer, CATEGORIZERS)
  categories = options.names_list("categories", config.categories)
  if config.categorizer == "table":
    if not config.category_table:
      raise ValueError("categorizer=table needs category_table (a "
                       "label<TAB>category file)")
    return profile_lib.TableCategorizer.from_file(config.category_table,
                                                  categories)
  if config.categorizer in ("llm", "llm_json"):
    if not config.llm:
      raise ValueError(f"categorizer={config.categorizer} needs llm="
                       "package.module:function, a hub id or a local "
                       "directory of a Flax language model")
    batch = options.integer("llm_batch_size", config.llm_batch_size,
                            minimum=1)
    tokens = options.integer("llm_max_new_tokens", config.llm_max_new_tokens,
                             minimum=1)
    if config.categorizer == "llm_json" and (llm_mapping.UNKNOWN
                                             not in categories):
      raise ValueError("categorizer=llm_json needs 'unknown' among the "
                       f"categories; got {categories}")
    llm = llm_mapping.load_llm(config.llm, max_new_tokens=tokens)
    if config.categorizer == "llm":
      return profile_lib.LLMCategorizer(llm, categories)
    return llm_mapping.MappingLLMCategorizer(llm, categories,
                                             batch_size=batch)
  min_cosine = (None if config.min_cosine is None else
                options.real("min_cosine", config.min_cosine, -1.0, 1.0))
  return profile_lib.ClipZeroShotCategorizer(
      text_embed.from_options(config, results), categories,
      min_cosine=min_cosine)


def label_q_values(results: results_lib.Run, layers: list[str]
                   ) -> dict[tuple[str, int], float]:
  """(layer, unit) -> q-value of the label, for every neuron of `layers`.

  Read from <run>/analysis/explanation_scores.csv when it has every neuron
  of `layers` with the run's current labels; else the scoring analysis runs
  (default options) on those layers and its table is not written.
  """
  path = os.path.join(results.analysis_dir(),
                      f"{scoring_analysis.TABLE}.csv")
  want = {(n.layer, n.unit): n.description for layer in layers
          for n in results.layer_neurons(layer)}
  if os.path.exists(path):
    rows = results_lib.read_table(path)
    got = {}
    for r in rows:
      try:
        got[(r["layer"], int(r["unit"]))] = (r["description"],
                                             float(r["q_value"]))
      except (KeyError, ValueError):
        continue
    if all(got.get(k, ("",))[0] == d for k, d in want.items()):
      logging.info("profile: q-values from %s", path)
      return {k: got[k][1] for k in want}
    logging.info("profile: %s does not cover the layers' current labels; "
                 "computing q-values", path)
  output = analyses.run(scoring_analysis.NAME, results, layers=layers)
  return {(r["layer"], r["unit"]): r["q_value"]
          for r in output.tables[scoring_analysis.TABLE].rows}


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  layers = options.names_list("layers", config.layers) or results.layers
  for layer in layers:
    results.check_layer(layer)
  neurons = [n for layer in layers for n in results.layer_neurons(layer)]
  alpha = (None if config.alpha is None else
           options.real("alpha", config.alpha, 0.0, 1.0, low_open=True,
                        high_open=True))
  if alpha is None or config.tau is not None:
    tau = (profile_lib.default_tau(results.similarity_fn)
           if config.tau is None else options.real("tau", config.tau))
  else:  # tau only draws the marker of the tau curve.
    tau = profile_lib.DEFAULT_TAU.get(results.similarity_fn, 0.0)
  categorizer = _categorizer(results, config)
  q_values = None if alpha is None else label_q_values(results, layers)
  prof = profile_lib.profile_neurons(neurons, categorizer, tau,
                                     q_values=q_values, alpha=alpha)
  curve_layers = list(prof.interpretable_vs_tau)
  curve_rows = [{"tau": float(t), **{l: float(prof.interpretable_vs_tau[l][i])
                                     for l in curve_layers}}
                for i, t in enumerate(prof.taus)]
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={
          "profile": results_lib.Table(
              prof.layers, "Layer profile (percent of neurons)"),
          "profile_neurons": results_lib.Table(
              prof.neurons, "Category of each label", per_neuron=True,
              neuron_columns=("category",)),
          "interpretable_vs_tau": results_lib.Table(
              curve_rows, "Interpretable fraction vs tau", show=False),
      },
      documents={"profile": {
          "categories": list(prof.categories), "tau": prof.tau,
          "categorizer": config.categorizer,
          "categorizer_stats": llm_mapping.mapping_of(categorizer),
          "alpha": prof.alpha, "interpretable_if": prof.cutoff,
          "layers": prof.layers,
          "interpretable_vs_tau": {
              "taus": prof.taus.tolist(),
              **{l: v.tolist() for l, v in prof.interpretable_vs_tau.items()}},
      }},
      charts={
          "profile": results_lib.Chart(
              lambda path: profile_lib.plot_profile(prof, path),
              "Layer profile: category of interpretable neurons "
              f"({prof.cutoff})"),
          "interpretable_vs_tau": results_lib.Chart(
              lambda path: profile_lib.plot_interpretable_vs_tau(prof, path),
              "Interpretable neurons vs tau"),
      },
      summary=[f"{r['layer']}: {r['n_interpretable']}/{r['n_neurons']} "
               f"interpretable ({prof.cutoff})" for r in prof.layers])
