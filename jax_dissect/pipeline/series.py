"""describe_neurons over a series of weights: checkpoints of one network.

  weights = checkpoint_steps("ckpts/")          # orbax <dir>/<step>/
  runs = describe_series(config, weights)       # <result_dir>/<name>/

Every run shares the config but its target weights, so the probe images,
the concept set and CLIP are the same: CLIP is loaded once and its image
and text embeddings and P are computed once (the first run writes them to
the cache and the others read them); each checkpoint computes only its own
activations and labels. The runs are ordinary results directories, in
series order, ready for `jax-dissect compare` (its trend).
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import re
from typing import Any

from absl import logging
import ml_collections

from jax_dissect.pipeline import config as config_lib
from jax_dissect.pipeline import describe
from jax_dissect.store import results as results_lib

# The item directory orbax's CheckpointManager gives a single item.
_ITEM_NAMES = ("default", "params", "state", "variables")


def _name(weights: str) -> str:
  base = os.path.basename(os.path.normpath(weights)) or weights
  return re.sub(r"[^\w.-]+", "_", base if os.path.isdir(weights)
                else os.path.splitext(base)[0])


def checkpoint_steps(directory: str) -> list[tuple[str, str]]:
  """The steps of an orbax checkpoint directory, in step order.

  Args:
    directory: a directory whose subdirectories named by integers are
      checkpoints (orbax's CheckpointManager layout, <dir>/<step>/, or
      <dir>/<step>/<item>/ with a single item such as "default"), each
      restorable as the target's variables (models.convert.save_variables).

  Returns:
    [("step_<n>", path)] sorted by n.
  """
  if not os.path.isdir(directory):
    raise ValueError(f"checkpoint_dir={directory!r} is not a directory")
  steps = sorted((int(d), d) for d in os.listdir(directory)
                 if d.isdigit() and os.path.isdir(os.path.join(directory, d)))
  if not steps:
    raise ValueError(f"checkpoint_dir={directory!r} has no step "
                     "subdirectories (<dir>/<step>/, step an integer)")
  out = []
  for step, d in steps:
    path = os.path.join(directory, d)
    items = [i for i in _ITEM_NAMES if os.path.isdir(os.path.join(path, i))]
    if len(items) == 1 and not os.path.exists(
        os.path.join(path, "_CHECKPOINT_METADATA")) and not os.path.exists(
            os.path.join(path, "_METADATA")):
      path = os.path.join(path, items[0])
    out.append((f"step_{step}", path))
  return out


def weights_list(weights: Sequence[str],
                 names: Sequence[str] | None = None
                 ) -> list[tuple[str, str]]:
  """[(name, weights)] for a list of weights (names default to the files'
  or directories' names)."""
  weights = [str(w) for w in weights if str(w)]
  if not weights:
    raise ValueError("the series has no weights; give a list of weights or "
                     "a checkpoint directory")
  if names:
    if len(names) != len(weights):
      raise ValueError(f"names has {len(names)} entries for {len(weights)} "
                       "weights")
    out_names = [str(n) for n in names]
  else:
    out_names = [_name(w) for w in weights]
  if len(set(out_names)) != len(out_names):
    out_names = [f"{i:03d}_{n}" for i, n in enumerate(out_names)]
  return list(zip(out_names, weights))


def describe_series(config: ml_collections.ConfigDict | dict[str, Any],
                    weights: Sequence[tuple[str, str]]
                    ) -> list[results_lib.Run]:
  """describe_neurons once per weights, CLIP loaded and computed once.

  Args:
    config: describe_neurons' options; result_dir is the series' directory
      (run i goes to <result_dir>/<name_i>); target_weights is replaced.
    weights: [(name, weights)] in series order (weights as target_weights
      takes them: a file, an orbax directory, a hub id, "random").

  Returns:
    The runs, in series order.
  """
  if not weights:
    raise ValueError("the series has no weights")
  full = config_lib.full_config(config)
  if full.concept_activations:
    raise ValueError("a series computes P with CLIP once; "
                     "concept_activations (a given P) does not apply")
  embedder = describe.load_clip(full)
  runs = []
  for i, (name, w) in enumerate(weights):
    one = {**full.to_dict(), "target_weights": w,
           "result_dir": os.path.join(full.result_dir, name)}
    logging.info("series: %d/%d %s (weights %s)", i + 1, len(weights), name,
                 w)
    runs.append(describe.describe_neurons(one, embedder=embedder))
  return runs
