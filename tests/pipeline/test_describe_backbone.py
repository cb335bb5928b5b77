"""describe_neurons' checks of a local backbone directory: an unsupported
architecture or a missing tokenizer is one line, raised before the probe
scan (nothing is written to the cache)."""

import json
import os
import shutil

import pytest

from jax_dissect import clip
from jax_dissect import pipeline
from jax_dissect.clip.siglip import load
from tests.helpers import pipeline_config
from tests.helpers import siglip as siglip_testing


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("siglip")
  tok = siglip_testing.write_tokenizer(root / "tok")
  return siglip_testing.write_tiny_siglip(root / "model", tok)


def _fails_before_the_scan(tmp_path, model_dir, error):
  config = pipeline_config.config(
      tmp_path, d_probe=f"folder:{pipeline_config.SAMPLE}",
      clip_model=str(model_dir))
  with pytest.raises(error) as err:
    pipeline.describe_neurons(config)
  message = str(err.value)
  assert "\n" not in message and len(message) <= 300, message
  assert not os.path.exists(tmp_path / "cache" / "scan")  # No work done.
  return message


def test_unsupported_architecture(siglip_dir, tmp_path):
  vit = shutil.copytree(siglip_dir, tmp_path / "vit")
  values = json.loads((vit / "config.json").read_text())
  (vit / "config.json").write_text(json.dumps({**values,
                                               "model_type": "vit"}))
  message = _fails_before_the_scan(tmp_path, vit, clip.ClipLoadError)
  assert "model_type='vit'" in message and "clip, siglip, siglip2" in message


def test_missing_tokenizer(siglip_dir, tmp_path):
  no_tok = shutil.copytree(siglip_dir, tmp_path / "no_tok")
  os.remove(no_tok / "spiece.model")
  message = _fails_before_the_scan(tmp_path, no_tok, load.SiglipLoadError)
  assert "spiece.model" in message
