"""jax_dissect.store.results: a run on disk and the analyses' outputs."""

import json
import os

import numpy as np
import pytest

from jax_dissect.store import results as results_lib


def _neurons():
  return [results_lib.Neuron("layer4", 0, "dog", 0.5, (("cat", 0.4),),
                             ("a.jpg", "b.jpg")),
          results_lib.Neuron("layer4", 1, 'a "quoted", label', 1 / 3),
          results_lib.Neuron("fc", 0, "car", -2.0)]


def test_write_and_load_run_round_trip(tmp_path):
  np.save(tmp_path / "A.npy", np.ones((2, 2), np.float32))
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
