"""describe_neurons with token_pool naming a model's prefix token or its
patch tokens: the run records the position it pooled, and each pooling is
its own cache entry."""

import json
import os
import shutil

import numpy as np

from jax_dissect import pipeline
from jax_dissect.data import preprocess
from jax_dissect.models import spec as spec_lib
from jax_dissect.store import results as results_lib
from tests.helpers import pipeline_config
from tests.models import test_token_pool as tokens

SMALL = preprocess.ImageTransform(resize=32, crop=32, mean=(0.5,) * 3,
                                  std=(0.25,) * 3)


def registers_spec():
  """A `module:factory` target with a CLS token and two registers."""
  return spec_lib.ModelSpec("tokens", tokens.Tokens, "", SMALL,
                            input_size=32, prefix_tokens=tokens.REGISTERS)


def _run(tmp_path, name, token_pool):
  probe = tmp_path / "probe"
  if not probe.exists():
    probe.mkdir()
    for f in sorted(os.listdir(pipeline_config.SAMPLE))[:12]:
      shutil.copy(os.path.join(pipeline_config.SAMPLE, f), probe / f)
  concepts = tmp_path / "concepts.txt"
  concepts.write_text("dog\ncat\ncar\ntree\nwater\nsky\n")
  config = pipeline_config.config(
      tmp_path, d_probe=f"folder:{probe}",
      target_model="tests.pipeline.test_token_pool:registers_spec",
      target_layers="block", token_pool=token_pool,
      concept_set=str(concepts))
  config.result_dir = str(tmp_path / name)
  pipeline.describe_neurons(config)
  return results_lib.load_run(config.result_dir)


def test_prefix_token_and_patches(tmp_path):
  reg = _run(tmp_path, "reg", "reg1")
  patches = _run(tmp_path, "patches", "patch_mean")
  assert reg.config["token_pool"] == "token:2"
  assert reg.config["token_pool_name"] == "reg1"
  assert patches.config["token_pool"] == "patch_mean:3"
  arrays = {r.config["token_pool"]: r.arrays["activations"]["block"]
            for r in (reg, patches)}
  assert len(set(arrays.values())) == 2  # Two cache entries.
  # The register token is the same for every image (a learned parameter
  # through a Dense layer): a constant column; patches are not.
  a_reg = reg.activations("block")
  assert np.allclose(a_reg, a_reg[:1], atol=1e-5)
  assert not np.allclose(patches.activations("block"),
                         patches.activations("block")[:1], atol=1e-3)
  with open(os.path.join(reg.path, "config.json")) as f:
    assert json.load(f)["token_pool"] == "token:2"
