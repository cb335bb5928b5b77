"""Analyses of a describe_neurons run: one package each, one shape for all.

Every subpackage here whose name does not start with "_" is an analysis:
its math sits in its modules, and its __init__.py re-exports the public
functions and defines:

  NAME: str                      its registry name (= the module name)
  DESCRIPTION: str               one line for --help and the docs
  get_config() -> ConfigDict     every option with its default; the scripts
                                 turn each key into a flag
  run(run: results.Run, config) -> results.AnalysisOutput

`run` validates the options first (one-line ValueErrors naming the option),
then re-runs what it needs on the run's cached arrays (similarity.compute for
kernels; CLIP's text tower only for strings outside the concept set) and
returns tables, charts and JSON documents; `results.write_analysis` saves
them with a manifest the HTML report walks. So a new analysis is one folder
here, and `scripts/analyze.py --analysis=NAME` runs it.
"""

from __future__ import annotations

import importlib
import pkgutil
import types
from typing import Any

import ml_collections


def names() -> list[str]:
  """The analyses' names, sorted."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if not m.name.startswith("_"))


def get(name: str) -> types.ModuleType:
  """The analysis module `name`, or a ValueError listing the analyses."""
  if name not in names():
    raise ValueError(f"unknown analysis {name!r}; allowed: "
                     f"{', '.join(names())}")
  return importlib.import_module(f"{__name__}.{name}")


def make_config(name: str, overrides: dict[str, Any] | None = None
                ) -> ml_collections.ConfigDict:
  """Analysis `name`'s default config with `overrides` applied.

  Raises:
    ValueError: an unknown option, naming the allowed ones.
  """
  config = get(name).get_config()
  unknown = sorted(set(overrides or {}) - set(config.keys()))
  if unknown:
    raise ValueError(f"analysis {name!r} has no option(s) {unknown}; "
                     f"options: {', '.join(sorted(config.keys()))}")
  with config.unlocked():
    for key, value in (overrides or {}).items():
      config[key] = value
  return config


def run(name: str, results_run, config: ml_collections.ConfigDict | None =
        None, **overrides):
  """Runs analysis `name` on a loaded run; returns its AnalysisOutput."""
  module = get(name)
  if config is None:
    config = make_config(name, overrides)
  elif overrides:
    raise ValueError("pass either a config or keyword overrides, not both")
  return module.run(results_run, config)
