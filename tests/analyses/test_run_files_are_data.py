"""A results folder from someone else is data: nothing named in its
config.json is imported or called (issue 25). Code runs only when the
user names it in an option."""

import os
import sys

import pytest

from jax_dissect import analyses
from jax_dissect import models
from jax_dissect.analyses import dnd as dnd_analysis
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth

_MODULE = "jd_issue25_planted_module"
_PLANTED = '''
import os
open(os.environ["JD_ISSUE25_MARKER"], "w").write("imported")
def make():
  raise RuntimeError("called")
'''


@pytest.fixture
def planted(tmp_path, monkeypatch):
  """A run whose config.json names code; {"run", "marker", "spec"}."""
  (tmp_path / "mod").mkdir()
  (tmp_path / "mod" / f"{_MODULE}.py").write_text(_PLANTED)
  monkeypatch.syspath_prepend(str(tmp_path / "mod"))
  marker = tmp_path / "imported"
  monkeypatch.setenv("JD_ISSUE25_MARKER", str(marker))
  sys.modules.pop(_MODULE, None)
  spec = f"{_MODULE}:make"
  path = synth.write_results(
      str(tmp_path / "run"), synth.make_world(),
      config={"target_model": spec, "d_probe": str(tmp_path / "probe")})
  yield {"run": results_lib.load_run(path), "marker": marker, "spec": spec}
  sys.modules.pop(_MODULE, None)


def _refused(error, spec):
  message = str(error.value)
  assert f"target_model={spec!r}" in message and "never run" in message
  assert f"--target_model={spec}" in message and len(message) <= 300


def test_weights_does_not_import_the_runs_target(planted):
  with pytest.raises(ValueError) as e:
    analyses.run("weights", planted["run"], layer_in="layer4",
                 layer_out="fc")
  _refused(e, planted["spec"])
  assert not os.path.exists(planted["marker"])
  # Named by the user, it is theirs to run.
  with pytest.raises(RuntimeError, match="called"):
    analyses.run("weights", planted["run"], layer_in="layer4",
                 layer_out="fc", target_model=planted["spec"])
  assert os.path.exists(planted["marker"])


def test_stability_noise_does_not_import_the_runs_target(planted):
  with pytest.raises(ValueError) as e:
    analyses.run("stability", planted["run"], noise_std=0.02,
                 num_resamples=2, layers=("fc",))
  _refused(e, planted["spec"])
  assert not os.path.exists(planted["marker"])


def test_dnd_does_not_import_the_runs_target(planted):
  with pytest.raises(ValueError) as e:
    dnd_analysis._target(planted["run"], 1)  # pylint: disable=protected-access
  _refused(e, planted["spec"])
  assert not os.path.exists(planted["marker"])


def test_run_target_model():
  assert models.run_target_model({"target_model": "resnet18"}) == "resnet18"
  assert models.run_target_model({"target_model": "a.b:c"}, "a.b:c") == (
      "a.b:c")
  with pytest.raises(ValueError, match="names no target_model"):
    models.run_target_model({})
