"""State dict -> Flax conversion, loaders and orbax round trip."""

import os
import sys

from flax import traverse_util
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from jax_dissect.models import convert
from jax_dissect.models import get_model
from jax_dissect.models import resnet
from jax_dissect.models import weights_fingerprint
from tests import helpers


def _random_state_dict(module, seed=0):
  """A state dict in torch layouts for `module`, built from its shapes."""
  rng = np.random.default_rng(seed)
  target = convert.abstract_variables(module, (1, 32, 32, 3))
  state = {}
  for key, path in convert.torch_key_map(target).items():
    shape = traverse_util.flatten_dict(target)[path].shape
    if path[-1] == "kernel":
      shape = (shape[-1], shape[-2]) + tuple(shape[:-2])
    state[key] = rng.normal(size=shape).astype(np.float32)
    if key.endswith("running_var"):
      state[key] = np.abs(state[key]) + 0.5
  return state, target


@pytest.fixture(scope="module")
def resnet18_state():
  return _random_state_dict(resnet.ResNet18())


def _flat(variables):
  return traverse_util.flatten_dict(jax.tree.map(np.asarray, variables))


def test_layouts(resnet18_state):
  state, target = resnet18_state
  variables = convert.convert_state_dict(
      {**state, "bn1.num_batches_tracked": np.array(3)}, target)
  params, stats = variables["params"], variables["batch_stats"]
  np.testing.assert_array_equal(params["conv1"]["kernel"],
                                state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["fc"]["kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(params["fc"]["bias"], state["fc.bias"])
  np.testing.assert_array_equal(params["bn1"]["scale"], state["bn1.weight"])
  np.testing.assert_array_equal(
      params["layer2"]["0"]["downsample"]["1"]["bias"],
      state["layer2.0.downsample.1.bias"])
  np.testing.assert_array_equal(stats["layer1"]["1"]["bn2"]["var"],
                                state["layer1.1.bn2.running_var"])
  np.testing.assert_array_equal(stats["bn1"]["mean"],
                                state["bn1.running_mean"])


def test_unknown_and_missing_keys_are_listed(resnet18_state):
  state, target = resnet18_state
  state = dict(state)
  del state["layer3.1.bn2.running_mean"]
  state["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
  with pytest.raises(ValueError) as e:
    convert.convert_state_dict(state, target)
  assert "layer9.0.conv1.weight" in str(e.value)
  assert "layer3.1.bn2.running_mean" in str(e.value)
  assert "unknown" in str(e.value) and "missing" in str(e.value)


def test_wrong_shape_names_key_and_both_shapes(resnet18_state):
  state, target = resnet18_state
  state = {**state, "layer1.0.conv2.weight": np.zeros((64, 64, 1, 1),
                                                      np.float32)}
  with pytest.raises(ValueError, match=r"layer1\.0\.conv2\.weight: state dict "
                     r"has shape \(64, 64, 1, 1\), model expects "
                     r"\(64, 64, 3, 3\)"):
    convert.convert_state_dict(state, target)


def test_round_trip_safetensors_orbax(resnet18_state, tmp_path):
  state, target = resnet18_state
  path = str(tmp_path / "resnet18.safetensors")
  save_file(state, path)
  variables = convert.convert_state_dict(convert.load_state_dict(path), target)
  direct = _flat(convert.convert_state_dict(state, target))
  assert _flat(variables).keys() == direct.keys()

  ckpt = convert.save_variables(tmp_path / "ckpt", variables)
  restored = convert.restore_variables(ckpt, target)
  flat, flat_restored = _flat(variables), _flat(restored)
  assert flat.keys() == flat_restored.keys() == direct.keys()
  for key in flat:
    assert flat_restored[key].dtype == flat[key].dtype
    np.testing.assert_array_equal(flat_restored[key], flat[key])
    np.testing.assert_array_equal(direct[key], flat[key])

  # The registry loads the same arrays from the file and the checkpoint.
  spec = get_model("resnet18")
  _, from_file = spec.load(weights=path)
  _, from_ckpt = spec.load(weights=ckpt)
  assert (weights_fingerprint(from_file) == weights_fingerprint(from_ckpt)
          == weights_fingerprint(variables))


def test_restore_rejects_other_model(resnet18_state, tmp_path):
  state, target = resnet18_state
  ckpt = convert.save_variables(tmp_path / "ckpt",
                                convert.convert_state_dict(state, target))
  with pytest.raises(ValueError, match="do not match"):
    get_model("resnet50").load(weights=ckpt)
  with pytest.raises(convert.WeightsLoadError, match="nowhere"):
    convert.restore_variables(tmp_path / "nowhere")


def test_pth_file(resnet18_state, tmp_path):
  torch = pytest.importorskip("torch", reason="torch extra not installed")
  state, target = resnet18_state
  path = str(tmp_path / "w.pth")
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in state.items()}},
             path)
  loaded = convert.load_state_dict(path)
  assert loaded.keys() == state.keys()
  for k in state:
    np.testing.assert_array_equal(loaded[k], state[k])


def test_places365_style_checkpoint(resnet18_state, tmp_path):
  """A .pth.tar with a DataParallel "module." prefix, as Places365 ships."""
  torch = pytest.importorskip("torch", reason="torch extra not installed")
  state, _ = resnet18_state
  path = str(tmp_path / "resnet18_places365.pth.tar")
  torch.save({"epoch": 90, "arch": "resnet18", "state_dict": {
      "module." + k: torch.from_numpy(v) for k, v in state.items()}}, path)
  loaded = convert.load_state_dict(path)
  assert loaded.keys() == state.keys()
  np.testing.assert_array_equal(loaded["conv1.weight"], state["conv1.weight"])


def test_pth_without_torch_says_so(tmp_path, monkeypatch):
  path = tmp_path / "w.pth"
  path.write_bytes(b"not used")
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
  with pytest.raises(convert.WeightsLoadError, match=r"torch extra"):
    convert.load_state_dict(path)


def test_bad_weight_files(tmp_path):
  with pytest.raises(convert.WeightsLoadError, match="does not exist"):
    convert.load_state_dict(tmp_path / "missing.safetensors")
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"\x00garbage")
  with pytest.raises(convert.WeightsLoadError, match="bad.safetensors"):
    convert.load_state_dict(bad)
  other = tmp_path / "w.npz"
  other.write_bytes(b"")
  with pytest.raises(convert.WeightsLoadError, match="allowed suffixes"):
    convert.load_state_dict(other)


def test_hub_download_uses_model_safetensors(resnet18_state, tmp_path,
                                             monkeypatch):
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  state, target = resnet18_state
  path = str(tmp_path / "model.safetensors")
  save_file(state, path)
  calls = []

  def fake_download(repo_id, filename, revision=None, **kwargs):
    calls.append((repo_id, filename, revision, kwargs))
    return path

  monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
  _, variables = get_model("resnet18").load()  # The default: a hub repo.
  assert calls[0][:2] == ("timm/resnet18.tv_in1k", "model.safetensors")
  assert (weights_fingerprint(variables) ==
          weights_fingerprint(convert.convert_state_dict(state, target)))


def test_hub_failure_suggests_local_path(tmp_path, monkeypatch):
  import huggingface_hub.constants  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE",
                      str(tmp_path / "hub"))
  with pytest.raises(convert.WeightsLoadError) as e:
    get_model("resnet50").load(weights="timm/resnet50.tv_in1k")
  message = str(e.value)
  assert "timm/resnet50.tv_in1k" in message and "local path" in message


def test_conversion_script(resnet18_state, tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  state, _ = resnet18_state
  path = str(tmp_path / "w.safetensors")
  save_file(state, path)
  root = helpers.REPO
  out = tmp_path / "ckpt"
  subprocess.run([sys.executable, os.path.join(root, "scripts",
                                               "convert_torchvision.py"),
                  "--model=resnet18", f"--weights={path}", f"--output={out}"],
                 check=True, cwd=root, capture_output=True,
                 env={**os.environ, "JAX_PLATFORMS": "cpu"})
  _, from_ckpt = get_model("resnet18").load(weights=str(out))
  _, from_file = get_model("resnet18").load(weights=path)
  assert weights_fingerprint(from_ckpt) == weights_fingerprint(from_file)
