"""Concept presence per backbone: documented a, b, or fitted to the
backbone's own P (jax_dissect.analyses.scoring.simulation), and the values
a run records and the analyses use."""

import json

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth


def _clip_like_p(n=600, m=800, dim=48, shared=0.2, seed=0):
  """Cosines of random unit embeddings sharing one direction (CLIP-like:
  mean ~ shared, spread of a few hundredths per image)."""
  rng = np.random.default_rng(seed)
  common = rng.normal(size=dim)
  common /= np.linalg.norm(common)

  def embed(k):
    x = (np.sqrt(shared) * common +
         np.sqrt(1 - shared) * rng.normal(size=(k, dim)) / np.sqrt(dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)

  return (embed(n) @ embed(m).T).astype(np.float32)


def test_pseudo_labels_are_each_images_top_concepts():
  p = np.array([[0.1, 0.5, 0.3, 0.2], [0.9, 0.1, 0.8, 0.0]], np.float32)
  np.testing.assert_array_equal(
      scoring.presence_pseudo_labels(p, 0.5),
      [[0, 1, 1, 0], [1, 0, 1, 0]])
  with pytest.raises(ValueError, match="marks all 4 concepts"):
    scoring.presence_pseudo_labels(p, 0.9)


def test_fit_gives_the_same_presence_for_any_scale_of_p():
  """A backbone whose cosines are s P + t gets a' = a / s, b' = s b - t:
  the same C (what makes C comparable across backbones)."""
  p = _clip_like_p()
  a, b = scoring.fit_presence_from_p(p)
  for s, t in ((3.0, -0.5), (0.25, 0.1)):
    a2, b2 = scoring.fit_presence_from_p(s * p + t)
    assert a2 == pytest.approx(a / s, rel=1e-3)
    assert b2 == pytest.approx(s * b - t, rel=1e-3, abs=1e-4)
    np.testing.assert_allclose(scoring.concept_presence(s * p + t, a2, b2),
                               scoring.concept_presence(p, a, b), atol=2e-3)
  # The fitted C marks about top_fraction of the entries present, on any
  # backbone; CLIP's documented values on one with lower, narrower cosines
  # (here P / 2 - 0.2, around zero) mark none (all C < 0.01).
  for q in (p, p / 2 - 0.2):
    c = scoring.concept_presence(q, *scoring.fit_presence_from_p(q))
    assert 0.5 * scoring.PRESENCE_TOP_FRACTION < c.mean() < (
        2 * scoring.PRESENCE_TOP_FRACTION)
  assert scoring.concept_presence(p / 2 - 0.2).max() < 0.01


def test_fit_samples_images_and_checks_its_input():
  p = _clip_like_p(n=300)
  # Fewer images than max_images: all of them, whatever the seed.
  assert scoring.fit_presence_from_p(p, seed=1) == scoring.fit_presence_from_p(
      p, seed=2)
  sub = scoring.fit_presence_from_p(p, max_images=100, seed=1)
  assert sub != scoring.fit_presence_from_p(p, max_images=100, seed=2)
  assert sub[0] == pytest.approx(scoring.fit_presence_from_p(p)[0], rel=0.3)
  with pytest.raises(ValueError, match="top_fraction"):
    scoring.fit_presence_from_p(p, top_fraction=0.0)
  with pytest.raises(ValueError, match=r"\(N, M\)"):
    scoring.fit_presence_from_p(p[0])


def test_presence_params_for_documented_fitted_and_fallback():
  doc = scoring.presence_params_for("openai/clip-vit-base-patch16")
  assert (doc.a, doc.b, doc.source) == (58.0, -0.25, "documented")
  p = _clip_like_p()
  fitted = scoring.presence_params_for("google/siglip-base-patch16-224", p)
  assert fitted.source == "fitted"
  assert (fitted.a, fitted.b) == pytest.approx(scoring.fit_presence_from_p(p))
  record = fitted.to_json()
  assert record["top_fraction"] == scoring.PRESENCE_TOP_FRACTION
  assert scoring.PresenceParams.from_json(json.loads(json.dumps(record))) == (
      fitted)
  with pytest.raises(ValueError, match="P is needed"):
    scoring.presence_params_for("some/model")
  # A P whose every image ranks the concepts alike (as a random backbone's
  # does) separates its pseudo-labels: no finite plain fit, so smoothed
  # labels: a finite, increasing C whose mean is the targets' (the
  # intercept's estimating equation), 1/50 smoothed by 0.01.
  ordered = np.tile(np.linspace(0, 1, 50, dtype=np.float32), (20, 1))
  with pytest.raises(ValueError, match="separated"):
    scoring.fit_presence_from_p(ordered)
  smooth = scoring.presence_params_for("some/model", ordered)
  assert smooth.source == "fitted" and "smoothed by 0.01" in smooth.note
  assert smooth.a > 0 and np.isfinite(smooth.b)
  c = scoring.concept_presence(ordered, smooth.a, smooth.b)
  assert c.mean() == pytest.approx(0.01 + 0.98 / 50, rel=1e-3)
  # Only a constant P cannot be fitted: the default, with the reason.
  fallback = scoring.presence_params_for("some/model",
                                         np.ones((20, 50), np.float32))
  assert fallback.source == "default" and "constant" in fallback.note
  assert (fallback.a, fallback.b) == (58.0, -0.25)


def _synthetic_run(root, config):
  world = synth.make_world(n_per_class=12)
  path = synth.write_results(str(root), world, config=config)
  return results_lib.load_run(path)


def test_runs_and_analyses_use_the_backbones_values(tmp_path):
  # A run that names no backbone used the default CLIP: documented values.
  old = _synthetic_run(tmp_path / "old", {})
  assert scoring.run_presence_params(old).source == "documented"
  # Another backbone without a record: fitted to the run's P.
  other = _synthetic_run(tmp_path / "other", {"clip_model": "/models/x"})
  params = scoring.run_presence_params(other)
  assert params.source == "fitted" and params.backbone == "/models/x"
  assert (params.a, params.b) == pytest.approx(scoring.fit_presence_from_p(
      np.asarray(other.concept_activations())))
  # A recorded value is used as recorded; the analyses report it.
  recorded = _synthetic_run(tmp_path / "rec", {"concept_presence": {
      "a": 12.5, "b": -0.1, "source": "fitted", "backbone": "x"}})
  out = analyses.run("scoring", recorded, num_permutations=5)
  summary = out.tables["explanation_scores_summary"].rows[0]
  assert (summary["presence_a"], summary["presence_b"],
          summary["presence_source"]) == (12.5, -0.1, "fitted")
  given = analyses.run("scoring", recorded, num_permutations=5,
                       presence_a=20.0, presence_b=-0.3)
  row = given.tables["explanation_scores_summary"].rows[0]
  assert (row["presence_a"], row["presence_source"]) == (20.0, "given")
  # Different a, b change the scores (they are used, not just reported).
  assert row["mean_correlation"] != summary["mean_correlation"]
  with pytest.raises(ValueError, match="both presence_a and presence_b"):
    analyses.run("scoring", recorded, num_permutations=5, presence_a=20.0)
  lin = analyses.run("linear_explanations", recorded, layer="fc",
                     max_length=2)
  lin_row = lin.tables["linear_explanations_summary"].rows[0]
  assert (lin_row["presence_a"], lin_row["presence_source"]) == (12.5,
                                                                 "fitted")
