"""DnD's pure pieces: concept scoring, answer parsing, candidates, specs."""

import numpy as np
import pytest

from jax_dissect.analyses.dnd import candidates
from jax_dissect.analyses.dnd import config as config_lib
from jax_dissect.analyses.dnd import models
from jax_dissect.analyses.dnd import selection

# Three candidates, two generated images each. All six activations sorted,
# highest first: 0.95 (c1), 0.9 (c0), 0.5 (c1), 0.3 (c2), 0.2 (c2), 0.1 (c0)
# so the ranks are c0: [1, 5], c1: [0, 2], c2: [3, 4].
ACTS = [np.array([0.9, 0.1]), np.array([0.5, 0.95]), np.array([0.2, 0.3])]
TOP = np.array([[1.0, 0.0], [0.0, 1.0]])
GEN = [np.array([[1.0, 0.0], [0.0, 1.0]]),
       np.array([[0.6, 0.8], [1.0, 0.0]]),
       np.array([[0.0, 1.0], [1.0, 0.0]])]


def test_ranks_and_topk_sq_mean_by_hand():
  ranks = selection.rank_positions(ACTS)
  assert ranks == [[1, 5], [0, 2], [3, 4]]
  np.testing.assert_allclose(selection.topk_sq_mean(ranks, 1), [1, 0, 9])
  # beta=2: (1 + 25) / 2, (0 + 4) / 2, (9 + 16) / 2.
  np.testing.assert_allclose(selection.topk_sq_mean(ranks, 2),
                             [13.0, 2.0, 12.5])
  # A candidate without images scores M + 1.
  np.testing.assert_allclose(selection.topk_sq_mean([[0], []], 5), [0, 3])


def test_score_candidates_by_hand():
  sel = selection.score_candidates(["c0", "c1", "c2"], ACTS, TOP, GEN,
                                   beta=2, clip_top_k=3)
  details = {d["candidate"]: d for d in sel.details}
  # Top-3 positions are 0, 1, 2: c0's first image (pos 1); c1's both
  # (pos 0: its 2nd image, pos 2: its 1st); none of c2 -> weight -1.
  assert details["c0"]["clip_weight"] == pytest.approx(0.5)  # mean(1, 0)
  # top @ [[1, 0], [0.6, 0.8]].T = [[1, .6], [0, .8]] -> mean 0.6.
  assert details["c1"]["clip_weight"] == pytest.approx(0.6)
  assert details["c2"]["clip_weight"] == -1.0
  # Sorted by topk_sq_mean: c1 (2), c2 (12.5), c0 (13) -> ranks 3, 2, 1.
  assert details["c0"]["combined"] == pytest.approx(1 * 0.5)
  assert details["c1"]["combined"] == pytest.approx(3 * 0.6)
  assert details["c2"]["combined"] == pytest.approx(2 * -1.0)
  assert sel.labels == ("c1", "c0", "c2")
  assert sel.score == pytest.approx(1.8)


def test_combine_ties_keep_candidate_order():
  order, combined = selection.combine(np.array([1.0, 1.0]),
                                      np.array([0.5, 0.25]))
  np.testing.assert_allclose(combined, [2 * 0.5, 1 * 0.25])
  assert list(order) == [0, 1]


@pytest.mark.parametrize("answer, label", [
    ("red cars", "red cars"),
    ("Label: red cars.", "red cars"),
    ('  "Striped fabric"\nmore text', "Striped fabric"),
    ("1. dogs on grass", "dogs on grass"),
    ("", ""),
    ("\n  \n", ""),
])
def test_parse_answer(answer, label):
  assert candidates.parse_answer(answer) == label


def test_clean_candidates_background_and_duplicates():
  out = candidates.clean_candidates(["Red Cars.", "red cars", "Floral Design",
                                     "wave graphics", "sky"])
  assert out == ["red cars", "floral design", "wave graphics", "sky",
                 "floral design background", "wave graphics background"]


def test_clean_caption():
  assert candidates.clean_caption('output : a "dog" < | eos | >') == "a dog"


def test_shuffles_are_seeded_and_start_in_order():
  a = candidates.shuffled_orders(6, 5, seed=0, content=["x"])
  assert a[0] == list(range(6))
  assert a == candidates.shuffled_orders(6, 5, seed=0, content=["x"])
  assert a != candidates.shuffled_orders(6, 5, seed=1, content=["x"])
  assert all(sorted(o) == list(range(6)) for o in a)
  prompts = candidates.summarize_prompts(["a", "b", "c"], 3, seed=0)
  assert len(prompts) == 3 and "a; b; c" in prompts[0]


def test_ask_uses_batch_and_checks_count():

  class Batched:

    def __init__(self):
      self.batches = 0

    def __call__(self, prompt):
      raise AssertionError("batch should be used")

    def batch(self, prompts):
      self.batches += 1
      return [p.upper() for p in prompts]

  llm = Batched()
  assert candidates.ask(llm, ["a", "b"]) == ["A", "B"]
  assert llm.batches == 1
  llm.batch = lambda prompts: ["x"]
  with pytest.raises(ValueError, match="1 answers for 2 prompts"):
    candidates.ask(llm, ["a", "b"])


def test_config_errors_are_one_line():
  for kwargs, match in [({"num_images": 0}, "num_images=0"),
                        ({"selection": "best"}, "selection='best'"),
                        ({"prompt_template": "x"}, "prompt_template"),
                        ({"similarity_fn": "nope"}, "similarity_fn")]:
    with pytest.raises(ValueError, match=match) as e:
      config_lib.DnDConfig(**kwargs)
    assert "\n" not in str(e.value)


class _Clip:

  def embed_images(self, images):
    return np.ones((len(images), 3), np.float32) / np.sqrt(3)


CLIP = _Clip()


def make_clip():
  return _Clip()


def my_captioner(images):
  return ["a thing"] * len(images)


def test_resolve_specs():
  assert models.resolve(None, "llm") is None
  assert models.resolve(my_captioner, "captioner") is my_captioner
  fn = models.resolve("tests.analyses.dnd.test_dnd_scoring:my_captioner", "captioner")
  assert fn.__name__ == "my_captioner" and fn([1, 2]) == ["a thing"] * 2
  assert candidates.model_identity(fn) == (
      "tests.analyses.dnd.test_dnd_scoring:my_captioner")
  lazy = models.resolve("owner/some-llm@v2", "llm")
  assert isinstance(lazy, models.Lazy)
  assert lazy.identity() == "llm:owner/some-llm@v2"
  assert lazy._model is None  # Not loaded until used.
  assert models.resolve("default", "generator").identity() == (
      "generator:" + models.DEFAULTS["generator"])
  with pytest.raises(ValueError, match="no attribute 'nope'"):
    models.resolve("tests.analyses.dnd.test_dnd_scoring:nope", "llm")
  with pytest.raises(ValueError, match="cannot import module"):
    models.resolve("no_such_pkg.mod:fn", "llm")
  with pytest.raises(ValueError, match="has no callable 'ACTS'"):
    models.resolve("tests.analyses.dnd.test_dnd_scoring:ACTS", "llm")
  # CLIP: an embedder object, or a function that makes one (lazily).
  got = models.resolve("tests.analyses.dnd.test_dnd_scoring:CLIP", "clip")
  assert type(got).__name__ == "_Clip" and not isinstance(got, models.Lazy)
  made = models.resolve("tests.analyses.dnd.test_dnd_scoring:make_clip", "clip")
  assert isinstance(made, models.Lazy) and made._model is None
  assert made.identity() == "clip:tests.analyses.dnd.test_dnd_scoring:make_clip"
  assert made.embed_images([1, 2]).shape == (2, 3)
  with pytest.raises(ValueError, match="neither an object with embed_images"):
    models.resolve("tests.analyses.dnd.test_dnd_scoring:ACTS", "clip")
  with pytest.raises(ValueError, match="kind="):
    models.resolve("x", "painter")
