"""`jax-dissect analyze` / scripts/analyze.py: run one analysis of a run.

  python scripts/analyze.py --analysis=stability --results_dir=results/rn50 \
      --num_resamples=20
  python scripts/analyze.py --analysis=evaluate --help   # its options

Every option of the analysis' `get_config()` is a flag of the same name
(lists are comma-separated); the outputs go to <results_dir>/analysis (or
--out_dir) with a manifest the HTML report reads. scripts/stability.py,
evaluate.py, profile_layers.py, score_explanations.py, compositional.py,
linear_explanations.py and
weight_analysis.py are the same command with the analysis fixed.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging

from jax_dissect import analyses
from jax_dissect.commands import common
from jax_dissect.runtime import callables

FLAGS = flags.FLAGS
_COMMON = ("results_dir", "out_dir", "analysis", "activation_dir")
_OPTION = re.compile(r"^\s*(?:c|config)\.(\w+)\s*=[^#]*(?:#\s*(.+))?$")
_COMMENT = re.compile(r"^\s*#\s*(.+)$")


def _option_help(module) -> dict[str, str]:
  """Help of each option, from the comments in the config's source."""
  out = {}
  sources = [module.get_config]
  from jax_dissect.clip import text_embed  # pylint: disable=g-import-not-at-top
  sources.append(text_embed.add_options)
  for fn in sources:
    try:
      lines = inspect.getsource(fn).splitlines()
    except (OSError, TypeError):
      continue
    above: list[str] = []  # Comment lines just above an option.
    for line in lines:
      comment, option = _COMMENT.match(line), _OPTION.match(line)
      if comment:
        above.append(comment.group(1).strip())
        continue
      if option:
        text = option.group(2) or " ".join(above)
        if text:
          out.setdefault(option.group(1), text.strip())
      above = []
  return out


def _define_option_flags(name: str) -> list[str]:
  """Defines one flag per option of analysis `name`; returns their names."""
  module = analyses.get(name)
  config = module.get_config()
  helps = _option_help(module)
  names = []
  for key in config.keys():
    if key in _COMMON:
      raise ValueError(f"analysis {name!r} option {key!r} clashes with a "
                       "common flag")
    kind = config.get_type(key)
    default = config[key]
    text = f"{helps.get(key, key)} (default: {default!r})"
    if kind is bool:
      flags.DEFINE_bool(key, None, text,
    module_name=common.flag_module())
    elif kind is int:
      flags.DEFINE_integer(key, None, text,
    module_name=common.flag_module())
    elif kind is float:
      flags.DEFINE_float(key, None, text,
    module_name=common.flag_module())
    elif kind in (tuple, list):
      flags.DEFINE_list(key, None, text,
    module_name=common.flag_module())
    else:
      flags.DEFINE_string(key, None, text,
    module_name=common.flag_module())
    names.append(key)
  return names


def _argv_value(argv: list[str], name: str) -> str | None:
  """The value of --name=V or --name V in argv, before flags are parsed."""
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _needs_torch(config) -> bool:
  """True if the options may need PyTorch: a sentence-transformers model,
  or a plug-in (`package.module:function`, e.g. a PyTorch captioner or
  Stable Diffusion pipeline wrapped in a function)."""
  plugin = any(isinstance(v, str) and callables.is_spec(v)
               for v in config.values())
  return (plugin or config.get("text_embedder") == "sentence"
          or bool(config.get("sentence_model")))


def _main(name: str | None, option_names: list[str]):
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if name is None:
      raise ValueError("--analysis is required; one of: "
                       f"{', '.join(analyses.names())}")
    if not FLAGS.results_dir:
      raise ValueError("--results_dir is required: a describe_neurons "
                       "results directory")
    overrides: dict[str, Any] = {
        k: FLAGS[k].value for k in option_names if FLAGS[k].present}
    config = analyses.make_config(name, overrides)
    common.setup_environment(needs_torch=_needs_torch(config))
    from jax_dissect.store import files  # pylint: disable=g-import-not-at-top
    from jax_dissect.store import results as results_lib  # pylint: disable=g-import-not-at-top
    run = results_lib.load_run(FLAGS.results_dir,
                               cache_root=FLAGS.activation_dir)
    # Before the work: a read-only out_dir failed after it.
    out_dir = files.check_writable_dir(run.analysis_dir(FLAGS.out_dir),
                                       "out_dir")
    output = analyses.get(name).run(run, config)
    paths = results_lib.write_analysis(output, out_dir)
    for line in output.summary:
      print(line)
    logging.info("wrote %s", ", ".join(paths.values()))
  return main


def run(argv: list[str] | None = None, analysis: str | None = None) -> None:
  """Parses the flags of `analysis` (or of --analysis in argv) and runs it."""
  argv = list(sys.argv if argv is None else argv)
  flags.DEFINE_string("results_dir", None, "describe_neurons output.",
    module_name=common.flag_module())
  flags.DEFINE_string("out_dir", None,
                      "Output dir (default <results_dir>/analysis).",
    module_name=common.flag_module())
  flags.DEFINE_string(
      "activation_dir", None, "The cache the run's arrays are read from, "
      "and only from (default: the one the run recorded); for a moved or "
      "copied cache.",
    module_name=common.flag_module())
  name = analysis
  if name is None:
    flags.DEFINE_string("analysis", None, "The analysis to run: one of "
                        f"{', '.join(analyses.names())}.",
    module_name=common.flag_module())
    name = _argv_value(argv[1:], "analysis")
  option_names: list[str] = []
  if name is not None:
    try:
      option_names = _define_option_flags(name)
    except ValueError as e:
      sys.exit(f"error: {e}")
  app.run(common.one_line_errors(_main(name, option_names)), argv=argv)
