"""Two smoke runs of describe_neurons as two "checkpoints" of one network:
the random ResNet-18 (CIFAR stem, 32 px) with target seeds 0 and 1, the same
24 shared photos, 12 concepts and tiny random CLIP; and a third run of seed
1 with another concept set. Made once per test session (the runs share one
cache, so the CLIP side is computed once)."""

import os
import shutil

from jax_dissect import pipeline
from jax_dissect.store import results as results_lib
from tests.helpers import cli
from tests.helpers import pipeline_config

_MADE: dict[str, dict[str, str]] = {}
OTHER_CONCEPTS = "dog\ncat\ncar\ntree\nwater\nsky\nhouse\nperson\nhill\n"


def make(tmp_path_factory) -> dict[str, str]:
  """{"seed0", "seed1", "other_concepts": results directory}."""
  if "runs" in _MADE:
    return _MADE["runs"]
  root = tmp_path_factory.mktemp("smoke_runs")
  probe = root / "probe"
  probe.mkdir()
  for name in sorted(os.listdir(pipeline_config.SAMPLE))[:24]:
    shutil.copy(os.path.join(pipeline_config.SAMPLE, name), probe / name)
  concepts = cli.concepts_file(str(root))
  other = root / "other_concepts.txt"
  other.write_text(OTHER_CONCEPTS)
  out = {}
  for name, seed, concept_set in (("seed0", 0, concepts),
                                  ("seed1", 1, concepts),
                                  ("other_concepts", 1, str(other))):
    config = pipeline_config.config(root, d_probe=f"folder:{probe}",
                                    concept_set=concept_set, target_seed=seed)
    config.result_dir = str(root / name)
    pipeline.describe_neurons(config)
    out[name] = config.result_dir
  _MADE["runs"] = out
  return out


def load(path: str) -> results_lib.Run:
  return results_lib.load_run(path)
