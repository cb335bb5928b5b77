"""The stability paper's score (top-5 label sets at k = 5, 10, 16 activating
images) against a hand-computed example, and in the analysis."""

import json

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect.analyses import stability as stability_analysis
from jax_dissect.analyses.stability import top_labels
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth

# Concept probabilities Q = softmax(a P) of two kinds of image: kind A
# favours concepts 0..4 (0 most), kind B concepts 5 and 6.
Q_A = np.array([.20, .19, .18, .17, .16, .05, .05])
Q_B = np.array([.02, .02, .02, .02, .02, .45, .45])
KIND = np.array(["A"] * 5 + ["B"] * 11 + ["A"] * 16)  # 32 images.


def _hand_example():
  """P with softmax(2 P) = Q per image, and three neurons:

  0: its top 5 images are A, then B (5..15): top-5 labels change at 10.
  1: its top 16 images are A (16..31): never changes.
  2: its top 10 are A (16..25), the next 6 are B (5..10): changes at 16.
  """
  q = np.stack([Q_A if k == "A" else Q_B for k in KIND])
  p = np.log(q) / 2.0  # wpmi's a = 2: softmax(2 P) = Q (rows sum to 1).
  n = len(KIND)
  a = np.zeros((n, 3), np.float32)
  a[:, 0] = n - np.arange(n)
  a[16:, 1] = 100 - np.arange(16)
  a[16:26, 2] = 100 - np.arange(10)
  a[5:11, 2] = 50 - np.arange(6)
  return a, p.astype(np.float32)


def test_same_label_sets_ignores_order():
  a = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
  b = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, 6]])
  np.testing.assert_array_equal(top_labels.same_label_sets(a, b),
                                [True, False])
  st = top_labels.stability_from_labels({5: a, 10: b, 16: a})
  assert st.score(10) == 50.0 and st.score(16) == 100.0


def test_hand_computed_example():
  # By hand, wpmi with lam=0 (so S = L, no prior): L[m] = sum over the top-k
  # images of log Q[i, m].
  # Neuron 0, k=10: 5 log .20 + 5 log .02 = -27.6 for concept 0 against
  #   5 log .05 + 5 log .45 = -19.0 for concepts 5, 6: they enter the top 5,
  #   which becomes {5, 6, 0, 1, 2}. Same at k=16.
  # Neuron 1: only A images at every k: {0, 1, 2, 3, 4} throughout.
  # Neuron 2, k=16: 10 log .20 + 6 log .02 = -39.6 (concept 0) against
  #   10 log .05 + 6 log .45 = -34.8 (concepts 5, 6): they enter at 16.
  a, p = _hand_example()
  st = top_labels.top_label_stability(a, p, "wpmi",
                                      kernel_kwargs={"lam": 0.0})
  sets = {k: [set(row.tolist()) for row in v]
          for k, v in st.top_labels.items()}
  assert sets[5] == [{0, 1, 2, 3, 4}] * 3
  assert sets[10] == [{0, 1, 2, 5, 6}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}]
  assert sets[16] == [{0, 1, 2, 5, 6}, {0, 1, 2, 3, 4}, {0, 1, 2, 5, 6}]
  np.testing.assert_array_equal(st.stable[10], [False, True, True])
  np.testing.assert_array_equal(st.stable[16], [False, True, False])
  assert st.score(10) == pytest.approx(200 / 3)
  assert st.score(16) == pytest.approx(100 / 3)
  # Not a property of the kernel alone: the same neurons with every image of
  # kind A are stable throughout.
  q_a = np.log(np.tile(Q_A, (len(KIND), 1))) / 2.0
  flat = top_labels.top_label_stability(a, q_a.astype(np.float32), "wpmi",
                                        kernel_kwargs={"lam": 0.0})
  assert flat.score(10) == flat.score(16) == 100.0


def test_bad_input():
  a, p = _hand_example()
  with pytest.raises(ValueError, match="has no top_k"):
    top_labels.top_label_stability(a, p, "cos_similarity")
  with pytest.raises(ValueError, match=r"top_k \[40\] > N=32"):
    top_labels.top_label_stability(a, p, "wpmi", ks=(40,))
  with pytest.raises(ValueError, match="no labels for top_k"):
    top_labels.stability_from_labels({5: np.zeros((2, 5), int)})


def test_in_the_analysis(tmp_path):
  world = synth.make_world()
  path = synth.write_results(str(tmp_path / "run"), world)
  run = results_lib.load_run(path)
  output = analyses.run("stability", run, num_resamples=2, top_ks=(5,))
  rows = output.tables["stability"].rows
  assert {"stable_5_10", "stable_5_16", "top_labels_k16"} <= set(rows[0])
  scores = output.tables["stability_score"].rows
  assert [r["layer"] for r in scores] == ["layer4", "fc", "all"]
  for r in scores[:2]:
    mine = [x for x in rows if x["layer"] == r["layer"]]
    assert r["stability_5_10"] == pytest.approx(
        100 * np.mean([x["stable_5_10"] for x in mine]))
  assert scores[2]["n_neurons"] == len(rows)
  # The planted class neurons (fc) keep their top-5 sets more often than
  # the noise neurons of layer4 (4 of its 8 are noise).
  fc = [x for x in rows if x["layer"] == "fc"]
  noise = [x for x in rows if x["layer"] == "layer4" and x["unit"] >= 4]
  assert (np.mean([x["stable_5_16"] for x in fc]) >
          np.mean([x["stable_5_16"] for x in noise]))
  written = results_lib.write_analysis(output, str(tmp_path / "out"))
  assert "stability_score.csv" in written
  with open(written["stability_score.json"]) as f:
    assert json.load(f)[-1]["layer"] == "all"
  assert stability_analysis.score_table(rows, 5, (10, 16)) == scores
