"""Weight analysis: a planted weight/label relation is detected."""

import json

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect.analyses.weights import connections as weights
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_planted_correlation_detected_and_random_not():
  rng = np.random.default_rng(0)
  cos = rng.uniform(-0.2, 1.0, (40, 30))
  planted = 0.5 * cos + 0.1 * rng.standard_normal(cos.shape)
  s = weights.weight_label_correlation(planted, cos, top_n=100)
  assert s["r"] > 0.8 and s["p_value"] < 1e-100 and s["n"] == 1200
  assert s["r_top"] > 0.3 and s["p_value_top"] < 1e-3
  assert s["mean_cosine_top"] > s["mean_cosine_all"]
  null = weights.weight_label_correlation(rng.standard_normal(cos.shape), cos,
                                          top_n=100)
  assert abs(null["r"]) < 0.1 and null["p_value"] > 1e-3
  with pytest.raises(ValueError, match="must both be"):
    weights.weight_label_correlation(planted, cos.T)


def test_connection_matrix():
  k = np.arange(2 * 2 * 3 * 4, dtype=np.float64).reshape(2, 2, 3, 4) - 20
  np.testing.assert_allclose(weights.connection_matrix(k), k.mean((0, 1)))
  np.testing.assert_allclose(weights.connection_matrix(k, "sum"), k.sum((0, 1)))
  mx = weights.connection_matrix(k, "max_abs")
  assert mx[0, 0] == -20 and mx[2, 3] == k[1, 1, 2, 3]
  with pytest.raises(ValueError, match="reduce='median'; allowed"):
    weights.connection_matrix(k, "median")
  with pytest.raises(ValueError, match="got shape"):
    weights.connection_matrix(np.ones(3))


def test_weight_analysis_writes_plot(tmp_path):
  world = synth.make_world()
  path = synth.write_results(str(tmp_path / "res"), world)
  results = results_lib.load_run(path)
  labels_in = [n.description for n in results.layer_neurons("layer4")]
  labels_out = [n.description for n in results.layer_neurons("fc")]
  cos = weights.label_similarity_matrix(labels_in, labels_out,
                                        synth.fake_embed)
  w = 2.0 * cos + 0.05 * np.random.default_rng(1).standard_normal(cos.shape)
  np.save(tmp_path / "w.npy", w)
  opts = dict(layer_in="layer4", layer_out="fc", top_n=10,
              text_embed_fn="tests.helpers.synthetic_run:fake_embed")
  output = analyses.run("weights", results, weights=str(tmp_path / "w.npy"),
                        **opts)
  s = output.documents["weights_layer4_fc"]
  assert s["r"] > 0.9 and s["p_value"] < 1e-10
  paths = results_lib.write_analysis(output, str(tmp_path / "out"))
  with open(paths["weights_layer4_fc.png"], "rb") as f:
    assert f.read(8) == PNG_MAGIC
  with open(paths["weights_layer4_fc.json"]) as f:
    assert json.load(f)["layer_out"] == "fc"
  assert "weights-layer4_fc.outputs.json" in paths
  np.save(tmp_path / "w5.npy", w[:, :5].T @ w)
  with pytest.raises(ValueError, match="connects 5 -> 8 neurons but layers"):
    analyses.run("weights", results, weights=str(tmp_path / "w5.npy"), **opts)
  w[0, 0] = np.nan
  np.save(tmp_path / "nan.npy", w)
  with pytest.raises(ValueError, match="NaN"):
    analyses.run("weights", results, weights=str(tmp_path / "nan.npy"),
                 **opts)
  # Without a file, the kernel is the run's target model's: "synthetic" is
  # no registered model, so the error names it.
  with pytest.raises(ValueError, match="unknown model 'synthetic'"):
    analyses.run("weights", results, **opts)
  np.savez(tmp_path / "w.npz", fc=w)
  with pytest.raises(ValueError, match=r"arrays: \['fc'\]"):
    weights.load_weights(str(tmp_path / "w.npz"))


def test_top_k_curve_by_hand():
  w = np.array([[3.0, 0.0], [1.0, 2.0], [-1.0, 0.5]])
  cos = np.array([[0.9, 0.1], [0.3, 0.7], [0.0, 0.2]])
  curve = weights.top_k_curve(w, cos, ks=(1, 2, 3, 6))
  # Weights by value: 3.0 (0.9), 2.0 (0.7), 1.0 (0.3), 0.5 (0.2), 0 (0.1),
  # -1 (0.0). Per output neuron, the strongest inputs: column 0 rows 0, 1,
  # 2 (0.9, 0.3, 0.0); column 1 rows 1, 2, 0 (0.7, 0.2, 0.1).
  assert [r["mean_cosine_top_k"] for r in curve] == pytest.approx(
      [0.9, 0.8, (0.9 + 0.7 + 0.3) / 3, np.mean(cos)])
  assert [r["mean_cosine_rank_k"] for r in curve[:3]] == pytest.approx(
      [0.8, 0.25, 0.05])
  assert curve[3]["mean_cosine_rank_k"] is None  # k > K_in.
  assert [r["weight_k"] for r in curve] == [3.0, 2.0, 1.0, -1.0]
  assert [r["k"] for r in weights.top_k_curve(w, cos)] == [1, 2, 5, 6]
  with pytest.raises(ValueError, match="curve ks must be in 1..6"):
    weights.top_k_curve(w, cos, ks=(7,))


def test_class_names_name_the_output_neurons(tmp_path):
  """The paper's setting: fc neurons named by their class. Weights planted
  on the class-name similarity are found with class names; and the top-k
  curve falls from the strongest weights to the mean."""
  world = synth.make_world()
  path = synth.write_results(str(tmp_path / "res"), world)
  results = results_lib.load_run(path)
  names = [f"the {c}" for c in synth.CLASSES]  # Not the concepts' strings.
  (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
  labels_in = [n.description for n in results.layer_neurons("layer4")]
  cos = weights.label_similarity_matrix(labels_in, names, synth.fake_embed)
  w = cos + 0.02 * np.random.default_rng(2).standard_normal(cos.shape)
  np.save(tmp_path / "w.npy", w)
  out = analyses.run(
      "weights", results, layer_in="layer4", layer_out="head",
      weights=str(tmp_path / "w.npy"), top_n=10,
      class_names=str(tmp_path / "classes.txt"),
      text_embed_fn="tests.helpers.synthetic_run:fake_embed")
  s = out.documents["weights_layer4_head"]
  assert s["output_names"] == "class_names" and s["r"] > 0.9
  curve = out.tables["weights_layer4_head_curve"].rows
  assert curve[0]["mean_cosine_top_k"] > curve[-1]["mean_cosine_top_k"]
  assert curve[-1]["mean_cosine_top_k"] == pytest.approx(s["mean_cosine_all"])
  paths = results_lib.write_analysis(out, str(tmp_path / "out"))
  with open(paths["weights_layer4_head_curve.png"], "rb") as f:
    assert f.read(8) == PNG_MAGIC
  # Without class names, layer_out must be a labelled layer.
  with pytest.raises(ValueError, match="layer 'head' is not in"):
    analyses.run("weights", results, layer_in="layer4", layer_out="head",
                 weights=str(tmp_path / "w.npy"))
