"""Compositional concepts: a neuron for "red car" images gets that pair."""

import numpy as np
import pytest

from jax_dissect.analyses.compositional import pairs as compositional
from tests.helpers import synthetic_run as synth

COLORS = ("red", "blue", "green")
OBJECTS = ("car", "dog", "house")


def _world(n_each=8, seed=0):
  rng = np.random.default_rng(seed)
  combos = [(c, o) for c in COLORS for o in OBJECTS]
  idx = np.repeat(np.arange(len(combos)), n_each)
  img = synth.fake_embed([f"{c} {o}" for c, o in combos])[idx]
  img = img + 0.5 * rng.standard_normal(img.shape) / np.sqrt(img.shape[1])
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  concepts = list(COLORS + OBJECTS)
  p = img @ synth.fake_embed(concepts).T
  red_car = np.array([combos[i] == ("red", "car") for i in idx], np.float32)
  red = np.array([combos[i][0] == "red" for i in idx], np.float32)
  noise = rng.standard_normal((len(idx), 30)).astype(np.float32)
  a = np.concatenate([3 * red_car[:, None], 3 * red[:, None], noise], axis=1)
  a[:, :2] += 0.1 * rng.standard_normal((len(idx), 2))
  return a, p, img, concepts


def test_ordered_pairs():
  assert compositional.ordered_pairs(["a", "b", "c"]) == [
      "a b", "a c", "b a", "b c", "c a", "c b"]


def test_planted_pair_neuron(tmp_path):
  a, p, img, concepts = _world()
  rows = compositional.compositional_concepts(
      a, p, img, concepts, [0, 1], synth.fake_embed,
      kernel_kwargs={"top_k": 8}, num_singles=6, top_n=3)
  red_car, red = rows
  assert red_car["best_pair"] in ("red car", "car red")
  assert red_car["pair_gain"] > 0
  assert len(red_car["pairs"]) == 3
  assert red_car["single_label"] in ("red", "car")
  # The "any red object" neuron: best single is "red", every pair says red.
  assert red["single_label"] == red["best_single"] == "red"
  assert all("red" in q["concept"].split() for q in red["pairs"][:2])
  del tmp_path


def test_bad_units():
  a, p, img, concepts = _world(n_each=2)
  with pytest.raises(ValueError,
                     match=r"units \[40\] out of range.*32 neurons"):
    compositional.compositional_concepts(a, p, img, concepts, [40],
                                         synth.fake_embed)
  with pytest.raises(ValueError, match="no units"):
    compositional.compositional_concepts(a, p, img, concepts, [],
                                         synth.fake_embed)


def test_memory_estimate_refuses_what_cannot_fit():
  """The issue's case: 20k concepts combined on 50k images (about 4e8
  pairs) is refused with the largest num_singles that fits."""
  gib = 2**30
  with pytest.raises(ValueError, match=r"num_singles=20000 needs about "
                     r"[\d.]+ GiB \(399980000 pairs x 50000 images\) but "
                     r"24.0 GiB is available; use num_singles <= (\d+)") as e:
    compositional.check_memory(50000, 2048, 20000, 512, available=24 * gib)
  fits = int(str(e.value).rsplit("<= ", 1)[1])
  assert compositional.memory_estimate(50000, 2048, fits, 512) <= 24 * gib
  assert compositional.memory_estimate(50000, 2048, fits + 1, 512) > 24 * gib
  # The paper's 100 singles on the same data fit (about 10 GiB: P of the
  # 9900 pairs over 50k images is 2 GiB and is held several times).
  assert compositional.check_memory(50000, 2048, 100, 512,
                                    available=24 * gib) < 12 * gib


def test_compositional_analysis_checks_memory_first(tmp_path, monkeypatch):
  """On a machine with too little memory the analysis stops with one line
  before embedding any pair."""
  import types  # pylint: disable=g-import-not-at-top

  import psutil  # pylint: disable=g-import-not-at-top

  from jax_dissect import analyses  # pylint: disable=g-import-not-at-top
  from jax_dissect.store import results  # pylint: disable=g-import-not-at-top
  path = synth.write_results(str(tmp_path / "run"), synth.make_world())
  monkeypatch.setattr(psutil, "virtual_memory",
                      lambda: types.SimpleNamespace(available=2**20))
  embedded = []
  monkeypatch.setattr(compositional.text_embed, "embed_unique",
                      lambda *a: embedded.append(a))
  with pytest.raises(ValueError, match=r"num_singles=20 needs about .* but "
                     r"0.0 GiB is available; use num_singles <= \d+"):
    analyses.run("compositional", results.load_run(path), layer="layer4",
                 units=[0], num_singles=20)
  assert not embedded


def test_a_text_embed_fn_of_the_wrong_kind_is_one_line(tmp_path):
  """Issue 25: --text_embed_fn=os:getcwd gave a traceback."""
  from jax_dissect import analyses  # pylint: disable=g-import-not-at-top
  from jax_dissect.store import results  # pylint: disable=g-import-not-at-top
  run = results.load_run(synth.write_results(str(tmp_path / "run"),
                                             synth.make_world()))
  for spec, match in (("os:getcwd", r"text_embed_fn='os:getcwd' cannot be "
                       r"called with a list of \d+ strings"),
                      ("os.path:join", r"text_embed_fn='os.path:join' "
                       r"cannot be called|returned a str")):
    with pytest.raises(ValueError, match=match) as e:
      analyses.run("compositional", run, layer="layer4", units=[0],
                   num_singles=4, text_embed_fn=spec)
    assert len(str(e.value)) <= 300 and "\n" not in str(e.value)
