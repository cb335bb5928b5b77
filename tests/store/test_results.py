"""jax_dissect.store.results: a run on disk and the analyses' outputs."""

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jax_dissect.store import files
from jax_dissect.store import integrity
from jax_dissect.store import results as results_lib


def _neurons():
  return [results_lib.Neuron("layer4", 0, "dog", 0.5, (("cat", 0.4),),
                             ("a.jpg", "b.jpg")),
          results_lib.Neuron("layer4", 1, 'a "quoted", label', 1 / 3),
          results_lib.Neuron("fc", 0, "car", -2.0)]


def test_write_and_load_run_round_trip(tmp_path):
  np.save(tmp_path / "A.npy", np.ones((2, 2), np.float32))
  integrity.write_check(str(tmp_path / "A.npy"))
  arrays = {"activations": {"layer4": str(tmp_path / "A.npy")},
            "concept_activations": "P.npy"}
  path = results_lib.write_run(
      tmp_path / "run", neurons=_neurons(), concepts=["dog", "cat", "car"],
      image_ids=["a.jpg", "b.jpg"], config={"similarity_fn": "wpmi",
                                            "similarity_kwargs": {"top_k": 3},
                                            "seed": 4},
      arrays=arrays, skipped_images=["bad.jpg"])
  run = results_lib.load_run(path)
  assert run.neurons == _neurons()
  assert run.layers == ["layer4", "fc"]
  assert run.concepts == ["dog", "cat", "car"]
  assert run.image_ids == ["a.jpg", "b.jpg"]
  assert run.skipped_images == ["bad.jpg"]
  assert run.similarity_fn == "wpmi" and run.seed == 4
  assert run.kernel_kwargs() == {"top_k": 3}
  assert run.kernel_kwargs("soft_wpmi", {"a": 2}) == {"a": 2}
  assert run.activations("layer4").shape == (2, 2)
  with pytest.raises(FileNotFoundError, match="P.npy"):
    run.concept_activations()
  with pytest.raises(ValueError, match="no entry 'image_embeddings'"):
    run.image_embeddings()
  with open(os.path.join(path, "descriptions.csv"), newline="") as f:
    lines = f.read().split("\r\n")
  assert lines[0] == "layer,unit,description,similarity"
  assert lines[2] == 'layer4,1,"a ""quoted"", label",0.333333'
  # Rewriting without skipped images removes the stale list.
  results_lib.write_run(path, neurons=_neurons(), concepts=[], image_ids=[],
                        config={}, arrays={})
  assert results_lib.load_run(path).skipped_images == []


def test_load_run_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    results_lib.load_run(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="neither"):
    results_lib.load_run(tmp_path)
  (tmp_path / "neurons.jsonl").write_text('{"layer": "x"}\n')
  with pytest.raises(ValueError, match="neurons.jsonl:1: not a neuron"):
    results_lib.load_run(tmp_path)
  (tmp_path / "neurons.jsonl").unlink()
  (tmp_path / "descriptions.csv").write_text("layer,unit\nx,1\n")
  with pytest.raises(ValueError, match="lacks columns"):
    results_lib.load_run(tmp_path)


def test_describe():
  s = np.array([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.1, 0.0]], np.float32)
  out = results_lib.describe(s, ["a", "b", "c", "d"], layer="L", top_n=2,
                             top_images=[["x"], ["y"]])
  assert [n.description for n in out] == ["b", "a"]
  assert out[0].similarity == pytest.approx(0.9) and out[0].layer == "L"
  assert [c for c, _ in out[0].alternatives] == ["c", "d"]
  assert out[1].unit == 1 and out[1].top_images == ("y",)
  with pytest.raises(ValueError, match="4 concept columns but 3"):
    results_lib.describe(s, ["a", "b", "c"])


def test_write_analysis_and_manifests(tmp_path):
  drawn = []

  def draw(path):
    drawn.append(path)
    with open(path, "wb") as f:
      f.write(b"\x89PNG")

  out = results_lib.AnalysisOutput(
      "demo", tables={
          "per_neuron": results_lib.Table(
              [{"layer": "fc", "unit": 0, "x": 1.5, "note": "hi"}],
              "Per neuron", per_neuron=True, neuron_columns=("x",)),
          "summary": results_lib.Table([{"a": 1}], "Summary", json=True)},
      charts={"plot": results_lib.Chart(draw, "A plot")},
      documents={"doc": {"k": [1, 2]}}, summary=["done"])
  paths = results_lib.write_analysis(out, str(tmp_path))
  assert set(paths) == {"per_neuron.csv", "summary.csv", "summary.json",
                        "doc.json", "plot.png", "demo.outputs.json"}
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
  entries = results_lib.analysis_outputs(str(tmp_path))
  kinds = {e.file: (e.kind, e.per_neuron, e.neuron_columns) for e in entries}
  assert kinds["per_neuron.csv"] == ("table", True, ("x",))
  assert kinds["plot.png"] == ("chart", False, ())
  assert results_lib.read_table(paths["per_neuron.csv"])[0]["note"] == "hi"
  with open(paths["doc.json"]) as f:
    assert json.load(f) == {"k": [1, 2]}
  os.remove(paths["plot.png"])  # A missing file is left out.
  assert "plot.png" not in {e.file for e in
                            results_lib.analysis_outputs(str(tmp_path))}
  with open(paths["demo.outputs.json"], "w") as f:
    f.write("{not json")
  with pytest.raises(ValueError, match="demo.outputs.json is damaged"):
    results_lib.analysis_outputs(str(tmp_path))
  assert results_lib.analysis_outputs(str(tmp_path / "none")) == []


def test_a_table_of_another_basis_keeps_its_basis(tmp_path):
  """A per-unit table of units that are not the run's neurons (SAE
  features) says so in its manifest, and only such tables do."""
  out = results_lib.AnalysisOutput("x", tables={
      "feats": results_lib.Table([{"layer": "l", "unit": 0, "v": 1}],
                             per_neuron=True, basis="sae:l"),
      "neurons": results_lib.Table([{"layer": "l", "unit": 0, "v": 2}],
                               per_neuron=True)})
  results_lib.write_analysis(out, str(tmp_path))
  got = {e.file: e.basis for e in results_lib.analysis_outputs(str(tmp_path))}
  assert got == {"feats.csv": "sae:l", "neurons.csv": ""}


# ----------------------------------------------------------------------------
# A run is written as a unit (issue 25).
# ----------------------------------------------------------------------------


def _write(path, label, cache=None, **extra):
  """A small run whose labels are all `label`; its arrays in `cache`."""
  cache = cache or os.path.join(os.path.dirname(path), "cache")
  os.makedirs(os.path.join(cache, "activations"), exist_ok=True)
  arrays = {"cache_root": cache, "activations": {}}
  for layer, k in (("layer4", 2), ("fc", 3)):
    a = os.path.join(cache, "activations", f"{layer}.npy")
    np.save(a, np.full((2, k), float(k), np.float32))
    integrity.write_check(a)
    with open(os.path.splitext(a)[0] + ".json", "w") as f:
      json.dump({"layer": layer}, f)
    arrays["activations"][layer] = a
  neurons = [results_lib.Neuron(l, u, label, 0.5, top_images=("a.jpg",))
             for l, k in (("layer4", 2), ("fc", 3)) for u in range(k)]
  return results_lib.write_run(
      path, neurons=neurons, concepts=["dog", "cat"],
      image_ids=["a.jpg", "b.jpg"], arrays=arrays,
      config={"similarity_fn": "soft_wpmi", "num_images": 2,
              "num_concepts": 2, **extra})


def _labels(path):
  return {n.description for n in results_lib.load_run(path).neurons}


def _no_temporaries(parent):
  return [n for n in os.listdir(parent) if n.startswith(files.TEMP_PREFIX)]


def test_a_full_disk_while_writing_keeps_the_previous_run_whole(
    tmp_path, monkeypatch):
  """Issue 25: a full disk while results were written left a new
  descriptions.csv beside the previous run's other files, read as a run.
  Now the previous run stays whole, the error is one line naming the file,
  and nothing half-written is left."""
  run = str(tmp_path / "run")
  _write(run, "dog")
  real = files.write_bytes
  written = []

  def full_disk(path, data):
    written.append(path)
    if len(written) > 3:  # The disk fills up while a file is written.
      with files.atomic_path(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(path, data)

  monkeypatch.setattr(files, "write_bytes", full_disk)
  with pytest.raises(OSError) as e:
    _write(run, "cat")
  monkeypatch.setattr(files, "write_bytes", real)
  message = str(e.value)
  assert "No space left" in message and run in message
  assert "\n" not in message and len(message) <= 300
  assert _labels(run) == {"dog"}
  assert _no_temporaries(tmp_path) == []


_KILLED_WRITER = """
import os, sys, time
from jax_dissect.store import files
real = files.write_bytes
count = []
def slow(path, data):
  count.append(path)
  if len(count) == 3:
    print("ready", flush=True)
    time.sleep(60)
  return real(path, data)
files.write_bytes = slow
sys.path.insert(0, sys.argv[2])
from tests.store import test_results
test_results._write(sys.argv[1], "cat")
"""


def test_a_killed_writer_leaves_the_previous_run_whole(tmp_path):
  """Issue 25: kill -9 while results are written. The previous run is
  read whole; the next write removes what the killed one left."""
  run = str(tmp_path / "run")
  _write(run, "dog")
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, run, root],
                          stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": root + (
                              os.pathsep + os.environ.get("PYTHONPATH", ""))})
  try:
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  assert _labels(run) == {"dog"}
  assert _no_temporaries(tmp_path)  # The killed writer's, left behind...
  time.sleep(1.1)
  _write(run, "cat")
  assert _labels(run) == {"cat"}
  assert _no_temporaries(tmp_path) == []  # ...removed by the next write.


def test_a_new_run_replaces_the_old_whole_and_keeps_the_users_files(
    tmp_path):
  run = str(tmp_path / "run")
  _write(run, "dog", score=1)
  os.makedirs(os.path.join(run, "analysis"))
  (tmp_path / "run" / "analysis" / "x.csv").write_text("old analysis")
  (tmp_path / "run" / "notes.txt").write_text("mine")
  (tmp_path / "run" / "skipped_images.txt").write_text("old.jpg\n")
  _write(run, "cat")
  assert _labels(run) == {"cat"}
  assert sorted(os.listdir(run)) == sorted(
      set(results_lib.RUN_FILES) - {results_lib.SKIPPED_TXT}
      | {results_lib.RUN_MANIFEST, "notes.txt"})
  assert "score" not in results_lib.load_run(run).config


@pytest.mark.parametrize("manifest", [True, False])
def test_a_mixed_or_partial_run_is_refused_naming_the_file(tmp_path,
                                                          manifest):
  """Issue 25: a descriptions.csv of one run beside the neurons.jsonl and
  config.json of another loaded as a run. With a manifest, any changed,
  missing or unlisted file is refused; without one (runs of earlier
  versions), files that disagree are."""
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _write(one, "dog")
  _write(two, "cat")
  original = open(os.path.join(one, "descriptions.csv"), "rb").read()
  if not manifest:
    for run in (one, two):
      os.remove(os.path.join(run, results_lib.RUN_MANIFEST))
  shutil.copy(os.path.join(two, "descriptions.csv"), one)
  with pytest.raises(ValueError) as e:
    results_lib.load_run(one)
  message = str(e.value)
  assert os.path.join(one, "descriptions.csv") in message
  assert "partial or mixed" in message and len(message) <= 300
  if manifest:
    os.remove(os.path.join(one, "descriptions.csv"))
    with pytest.raises(ValueError, match="descriptions.csv is missing"):
      results_lib.load_run(one)
    (tmp_path / "one" / "descriptions.csv").write_text("x")
    (tmp_path / "one" / "skipped_images.txt").write_text("x\n")
    with pytest.raises(ValueError, match="differs from the run's manifest"):
      results_lib.load_run(one)
    with open(os.path.join(one, "descriptions.csv"), "wb") as f:
      f.write(original)
    with pytest.raises(ValueError, match="skipped_images.txt is not in"):
      results_lib.load_run(one)
  else:
    shutil.copy(os.path.join(two, "neurons.jsonl"), one)
    assert _labels(one) == {"cat"}
    with open(os.path.join(one, "concepts.txt"), "w") as f:
      f.write("bird\n")
    with pytest.raises(ValueError, match="concepts.txt lacks labels"):
      results_lib.load_run(one)


def test_nan_in_the_config_is_refused(tmp_path):
  """Issue 25: NaN hyper-parameters were written into config.json."""
  with pytest.raises(ValueError, match="NaN or inf"):
    _write(str(tmp_path / "run"), "dog", similarity_kwargs={"a": math.nan})
  assert not os.path.exists(tmp_path / "run")
  run = str(tmp_path / "old")
  _write(run, "dog")
  os.remove(os.path.join(run, results_lib.RUN_MANIFEST))
  with open(os.path.join(run, "config.json"), "w") as f:
    f.write('{"similarity_kwargs": {"a": NaN}}')
  with pytest.raises(ValueError, match="config.json is not valid JSON: NaN"):
    results_lib.load_run(run)


def test_arrays_are_checked_against_the_runs_records(tmp_path):
  """Issue 25: arrays.json pointing a layer at another layer's array ran
  the analysis on the wrong data."""
  run = str(tmp_path / "run")
  _write(run, "dog")
  assert results_lib.load_run(run).activations("fc").shape == (2, 3)
  path = os.path.join(run, "arrays.json")
  arrays = json.load(open(path))
  os.remove(os.path.join(run, results_lib.RUN_MANIFEST))  # A hand edit.
  arrays["activations"]["fc"] = arrays["activations"]["layer4"]
  json.dump(arrays, open(path, "w"))
  with pytest.raises(ValueError, match=r"activations/fc has shape \(2, 2\), "
                     r"but the run's records need \(2, 3\)"):
    results_lib.load_run(run).activations("fc")
  # Same shape, another layer's entry: its description says so.
  cache = str(tmp_path / "cache")
  a = os.path.join(cache, "activations", "other.npy")
  np.save(a, np.zeros((2, 3), np.float32))
  integrity.write_check(a)
  json.dump({"layer": "layer4"}, open(os.path.splitext(a)[0] + ".json", "w"))
  arrays["activations"]["fc"] = a
  json.dump(arrays, open(path, "w"))
  with pytest.raises(ValueError, match="points at the array of layer "
                     "'layer4'"):
    results_lib.load_run(run).activations("fc")


def test_arrays_are_read_only_inside_the_cache(tmp_path):
  """Issue 25: arrays.json paths were read from anywhere on disk. They are
  trusted inside the run's recorded cache, or the one the reader gives
  (a moved cache is found there)."""
  run = str(tmp_path / "run")
  _write(run, "dog")
  elsewhere = str(tmp_path / "elsewhere.npy")
  np.save(elsewhere, np.zeros((2, 3), np.float32))
  integrity.write_check(elsewhere)
  path = os.path.join(run, "arrays.json")
  arrays = json.load(open(path))
  os.remove(os.path.join(run, results_lib.RUN_MANIFEST))
  good = arrays["activations"]["fc"]
  arrays["activations"]["fc"] = elsewhere
  json.dump(arrays, open(path, "w"))
  with pytest.raises(ValueError, match="fc is outside the cache") as e:
    results_lib.load_run(run).activations("fc")
  assert len(str(e.value)) <= 300
  arrays["activations"]["fc"] = good
  json.dump(arrays, open(path, "w"))
  shutil.move(str(tmp_path / "cache"), str(tmp_path / "moved"))
  with pytest.raises(FileNotFoundError, match="activation_dir"):
    results_lib.load_run(run).activations("fc")
  moved = results_lib.load_run(run, cache_root=str(tmp_path / "moved"))
  assert moved.activations("fc").shape == (2, 3)
  arrays["activations"]["fc"] = elsewhere
  json.dump(arrays, open(path, "w"))
  with pytest.raises(ValueError, match="outside the cache"):
    results_lib.load_run(run, cache_root=str(tmp_path / "moved")
                         ).activations("fc")
