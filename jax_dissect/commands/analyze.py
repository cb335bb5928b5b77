"""`jax-dissect analyze` / scripts/analyze.py: run one analysis of a run.

  jax-dissect stability --results_dir=results/smoke --num_resamples=20
  jax-dissect analyze --analysis=evaluate --results_dir=results/smoke \\
      --class_names=class_names.txt

Every option of the analysis' `get_config()` is a flag of the same name
(lists are comma-separated); the outputs go to <results_dir>/analysis (or
--out_dir) with a manifest the HTML report reads, which records the options
they were made with. scripts/stability.py, evaluate.py, profile_layers.py,
score_explanations.py, compositional.py, linear_explanations.py,
weight_analysis.py and describe_and_dissect.py are the same command with
the analysis fixed.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

from absl import flags
from absl import logging

from jax_dissect.commands import common
from jax_dissect.commands import console
from jax_dissect.commands import help as help_lib

FLAGS = flags.FLAGS
_COMMON = ("results_dir", "out_dir", "analysis", "activation_dir",
           "compilation_cache")
_OPTION = re.compile(r"^\s*(?:c|config)\.(\w+)\s*=[^#]*(?:#\s*(.+))?$")
_COMMENT = re.compile(r"^\s*#\s*(.+)$")
_STATE: dict[str, Any] = {"defined": False, "options": []}


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
  from jax_dissect import analyses  # pylint: disable=g-import-not-at-top
  module = analyses.get(name)
  config = module.get_config()
  helps = _option_help(module)
  names = []
  kw = {"module_name": common.FLAG_MODULE}
  for key in config.keys():
    if key in _COMMON:
      raise ValueError(f"analysis {name!r} option {key!r} clashes with a "
                       "common flag")
    kind = config.get_type(key)
    default = config[key]
    text = f"{helps.get(key, key)} (default: {default!r})"
    if kind is bool:
      flags.DEFINE_bool(key, None, text, **kw)
    elif kind is int:
      flags.DEFINE_integer(key, None, text, **kw)
    elif kind is float:
      flags.DEFINE_float(key, None, text, **kw)
    elif kind in (tuple, list):
      flags.DEFINE_list(key, None, text, **kw)
    else:
      flags.DEFINE_string(key, None, text, **kw)
    names.append(key)
  return names


def define_flags(name: str | None = None, fixed: bool = False) -> list[str]:
  """Declares the flags (once): the common ones, --analysis unless the
  analysis is `fixed` (a command of its own), and one per option of
  analysis `name`.

  Returns:
    The option flags' names.

  Raises:
    console.UsageError: an unknown analysis.
  """
  if _STATE["defined"]:
    return _STATE["options"]
  _STATE["defined"] = True
  kw = {"module_name": common.FLAG_MODULE}
  flags.DEFINE_string("results_dir", None, "A results directory of "
                      "describe (required).", **kw)
  flags.DEFINE_string("out_dir", None,
                      "Output dir (default <results_dir>/analysis).", **kw)
  flags.DEFINE_string(
      "activation_dir", None, "The cache the run's arrays are read from, "
      "and only from (default: the one the run recorded); for a moved or "
      "copied cache.", **kw)
  flags.DEFINE_bool("compilation_cache", True, "Keep compiled XLA programs "
                    "in the run's cache directory, so the next run with the "
                    "same shapes skips compiling.", **kw)
  if not fixed:
    flags.DEFINE_string("analysis", None, "The analysis to run: one of "
                        f"{', '.join(help_lib.analysis_names())}.", **kw)
  if name is not None:
    if name not in help_lib.analysis_names():
      raise console.UsageError(
          f"unknown analysis {name!r}; allowed: "
          f"{', '.join(help_lib.analysis_names())}")
    _STATE["options"] = _define_option_flags(name)
  return _STATE["options"]


def help_notes(name: str | None = None) -> list[str]:
  if name is None:
    return ["The analyses (each also a command of its own, e.g. "
            "jax-dissect stability --help): " +
            ", ".join(help_lib.analysis_names()) + "."]
  return [f"Outputs: <results_dir>/analysis/{name}*.csv/.json/.png and "
          f"{name}.outputs.json (the manifest: files and the options "
          "used); jax-dissect report shows them."]


def _argv_value(argv: list[str], name: str) -> str | None:
  """The value of --name=V or --name V in argv, before flags are parsed."""
  for i, arg in enumerate(argv):
    if arg.startswith((f"--{name}=", f"-{name}=")):
      return arg.split("=", 1)[1]
    if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _needs_torch(config) -> bool:
  """True if the options may need PyTorch: a sentence-transformers model,
  or a plug-in (`package.module:function`, e.g. a PyTorch captioner or
  Stable Diffusion pipeline wrapped in a function)."""
  from jax_dissect.runtime import callables  # pylint: disable=g-import-not-at-top
  plugin = any(isinstance(v, str) and callables.is_spec(v)
               for v in config.values())
  return (plugin or config.get("text_embedder") == "sentence"
          or bool(config.get("sentence_model")))


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
  """`key: old -> new` for each option that differs."""
  out = []
  for k in sorted(set(before) | set(after)):
    if before.get(k) != after.get(k):
      out.append(f"{k}: {before.get(k)!r} -> {after.get(k)!r}")
  return out


def _main(name: str | None, option_names: list[str]):
  def main(argv):
    del argv
    from jax_dissect import analyses  # pylint: disable=g-import-not-at-top
    if name is None:
      raise console.UsageError("--analysis is required; one of: "
                               f"{', '.join(analyses.names())}")
    if not FLAGS.results_dir:
      raise console.UsageError("--results_dir is required: a results "
                               "directory of jax-dissect describe")
    overrides: dict[str, Any] = {
        k: FLAGS[k].value for k in option_names if FLAGS[k].present}
    config = analyses.make_config(name, overrides)
    common.setup_environment(needs_torch=_needs_torch(config))
    named = {k: v for k, v in config.items() if common.hub_ids([v])}
    reachable = common.prepare_hub(named.values())
    from jax_dissect.store import results as results_lib  # pylint: disable=g-import-not-at-top
    run = results_lib.load_run(FLAGS.results_dir,
                               cache_root=FLAGS.activation_dir)
    from jax_dissect.store import files  # pylint: disable=g-import-not-at-top
    # Before the work: a read-only out_dir would fail only after it.
    out_dir = files.check_writable_dir(run.analysis_dir(FLAGS.out_dir),
                                       "out_dir")
    if FLAGS.compilation_cache:
      common.enable_compilation_cache(run.cache_dir)
    from jax_dissect.runtime import progress  # pylint: disable=g-import-not-at-top
    try:
      with progress.stage(name):  # The display shows how long it runs.
        output = analyses.get(name).run(run, config)
    except Exception as e:  # pylint: disable=broad-except
      message = None if reachable else common.offline_message(e, named)
      if message:
        raise console.UsageError(message) from e
      raise
    options = results_lib.json_options(config.to_dict())
    before = results_lib.read_manifest(out_dir, output.analysis,
                                       output.instance)
    paths = results_lib.write_analysis(output, out_dir, options=options)
    for line in output.summary:
      print(line)
    if before is not None and before.get("options") is not None and (
        before["options"] != options):
      changes = _changed(before["options"], options)
      print(f"note: replaced the outputs of the {name} run of "
            f"{before.get('written', 'before')} made with other options "
            f"({'; '.join(changes)}); the report lists both option sets")
    logging.info("wrote %s", ", ".join(paths.values()))
  return main


def run(argv: list[str] | None = None, analysis: str | None = None) -> None:
  """Parses the flags of `analysis` (or of --analysis in argv) and runs it;
  exits with the command's status."""
  argv = list(sys.argv if argv is None else argv)

  def go():
    name = analysis or _argv_value(argv[1:], "analysis")
    option_names = define_flags(name, fixed=analysis is not None)
    common.parse_flags(argv)
    console.setup_output(argv)
    _main(name, option_names)(argv)

  console.guarded(go)
