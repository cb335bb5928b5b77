"""Describe-and-Dissect end to end, on the shared photos, offline.

- tiny random Flax captioner and language model, a seeded noise generator
  and a tiny random CLIP: every stage runs and lands in the store; a second
  run is all cache hits and calls no model;
- a planted world: class-detector neurons, a captioner that names an
  image's class, a language model that returns the most frequent (or the
  first) caption: each neuron's class is recovered, with either selection;
- crops of a planted bright square through a real target pass;
- bad input: one-line ValueErrors; finished stages survive.
"""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from jax_dissect.analyses.dnd import CacheStore
from jax_dissect.analyses.dnd import describe_and_dissect
from jax_dissect.analyses.dnd import DnDConfig
from jax_dissect.analyses.dnd import images as images_lib
from jax_dissect.analyses.dnd import target as target_lib
from jax_dissect.data import preprocess
from tests.helpers import dnd_models as dnd_testing

STAGES = ("probe_acts", "crops", "captions", "simplified", "candidates",
          "generated", "generated_acts", "clip_images", "scores")
SMALL_RUN = DnDConfig(num_images=3, num_crops=2, image_size=64,
                      num_candidates=3, num_generated=3, beta=2,
                      clip_top_k=3, unit_chunk=1)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  # The module-level models: built and compiled once per test session.
  return {"captioner": dnd_testing.captioner, "llm": dnd_testing.llm,
          "clip": dnd_testing.tiny_clip(str(tmp_path_factory.mktemp("tok")))}


@pytest.fixture(scope="module")
def photos():
  return dnd_testing.shared_photos(8)


@pytest.fixture(scope="module")
def target():
  return dnd_testing.tiny_target()


def _run(target, photos, store, models, generator, units=(0, 3), **config):
  captioner = dnd_testing.CountingCaptioner(models["captioner"])
  results = describe_and_dissect(
      target, photos, "conv2", list(units), captioner=captioner,
      llm=models["llm"], generator=generator, clip_embedder=models["clip"],
      config=DnDConfig(**{**SMALL_RUN.__dict__, **config}), store=store)
  return results, captioner


def test_end_to_end_then_all_cache_hits(tmp_path, target, photos,
                                        tiny_models):
  store = CacheStore(tmp_path / "store")
  generator = dnd_testing.NoiseGenerator()
  results, captioner = _run(target, photos, store, tiny_models, generator)
  assert [r.unit for r in results] == [0, 3]
  for r in results:
    assert 1 <= len(r.labels) <= 3 and all(r.labels)
    assert r.description == r.labels[0] and r.description in r.candidates
    assert len(r.captions) == len(r.simplified) == 3
    assert len(r.crops.top) == 3
    row = r.row()
    assert list(row) == ["layer", "unit", "description", "label_2",
                         "label_3", "candidates", "score"]
  assert sum(r.crops.num_crops() for r in results) > 0  # Conv layer: crops.
  for stage in STAGES:
    assert store.stats[f"{stage}:miss"] > 0, stage
  assert captioner.images == 6
  calls = generator.calls
  assert calls == len({c for r in results for c in r.candidates})

  # A second run (a fresh store object on the same directory): all hits,
  # no model is called, and the results are the same.
  store2 = CacheStore(tmp_path / "store")
  again, captioner2 = _run(target, photos, store2, tiny_models, generator)
  assert store2.misses() == 0, store2.stats
  assert captioner2.images == 0 and generator.calls == calls
  assert [r.row() for r in again] == [r.row() for r in results]

  # clip_dissect selection on the same store: stages 1-2 are reused and no
  # image is generated.
  store3 = CacheStore(tmp_path / "store")
  picked, _ = _run(target, photos, store3, tiny_models, None,
                   selection="clip_dissect", similarity_fn="soft_wpmi")
  assert store3.stats["candidates:miss"] == 0
  assert store3.stats["clip_texts:miss"] == 1
  assert generator.calls == calls
  for r, p in zip(results, picked):
    assert p.candidates == r.candidates and p.description in p.candidates


# ---------------------------------------------------------------------------
# Planted world: neuron k detects class k.

NUM_CLASSES, VARIANTS = 4, 4


def _features(image: Image.Image) -> np.ndarray:
  """What the detector compares: its input, centred and unit-norm."""
  x = dnd_testing.SMALL(image).ravel().astype(np.float64)
  x -= x.mean()
  return x / np.linalg.norm(x)


class Sharpen(nn.Module):

  @nn.compact
  def __call__(self, x):
    return jax.nn.softmax(50.0 * x, axis=-1)


class ClassDetector(nn.Module):
  """Layer "classes": nearly one-hot on the class whose template matches."""

  @nn.compact
  def __call__(self, x):
    f = x.reshape(x.shape[0], -1)
    f = f - f.mean(-1, keepdims=True)
    f = f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-6)
    sim = nn.Dense(NUM_CLASSES, use_bias=False, name="match")(f)
    return Sharpen(name="classes")(sim)


@pytest.fixture(scope="module")
def planted():
  paths = dnd_testing.shared_photos(NUM_CLASSES)
  names = [dnd_testing.class_name(p) for p in paths]
  base = [np.asarray(preprocess.load_rgb(p).resize((64, 64))) for p in paths]
  rng = np.random.default_rng(0)

  def variants(k, n):
    out = []
    for v in range(n):
      img = base[k].astype(np.float64) * (0.85 + 0.1 * v) + rng.normal(
          0, 3, base[k].shape)
      out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out

  probe = [im for k in range(NUM_CLASSES) for im in variants(k, VARIANTS)]
  templates = np.stack([_features(Image.fromarray(b)) for b in base])
  target = target_lib.Target(
      ClassDetector(), {"params": {"match": {"kernel": templates.T.astype(
          np.float32)}}}, dnd_testing.SMALL, name="class_detector")

  def classify(image):
    return int(np.argmax(templates @ _features(images_lib.load(image))))

  def captioner(images):
    return [f"a photo of a {names[classify(im)]}" for im in images]

  def generator(prompt, num_images, seed):
    del seed
    for k, name in enumerate(names):
      if prompt.endswith(" " + name):
        return np.stack(variants(k, num_images))
    return rng.integers(0, 255, (num_images, 64, 64, 3), dtype=np.uint8)

  def embed_class_names(texts):
    return np.stack([templates[names.index(t.removeprefix("a photo of a "))]
                     for t in texts])

  return {"probe": probe, "names": names, "target": target,
          "captioner": captioner, "generator": generator,
          "clip": FeatureClip("planted-clip", embed_class_names)}


def _descriptions(prompt):
  line = [l for l in prompt.splitlines()
          if l.startswith(("Caption:", "Descriptions:"))][-1]
  return [d.strip() for d in line.split(":", 1)[1].split(";")]


def most_frequent_llm(prompt):
  return collections.Counter(_descriptions(prompt)).most_common(1)[0][0]


def first_listed_llm(prompt):
  return _descriptions(prompt)[0]


@pytest.mark.parametrize("llm, selection", [
    (most_frequent_llm, "generation"),
    (first_listed_llm, "generation"),
    (first_listed_llm, "clip_dissect"),
])
def test_planted_class_detectors_recover_their_class(tmp_path, planted, llm,
                                                     selection):
  config = DnDConfig(num_images=6, image_size=64, num_generated=4, beta=3,
                     clip_top_k=4, selection=selection,
                     similarity_kwargs={"top_k": 4})
  results = describe_and_dissect(
      planted["target"], planted["probe"], "classes", None,
      captioner=planted["captioner"], llm=llm,
      generator=planted["generator"], clip_embedder=planted["clip"],
      config=config, store=CacheStore(tmp_path))
  want = [f"a photo of a {n}" for n in planted["names"]]
  assert [r.description for r in results] == want
  for r in results:
    assert r.crops.num_crops() == 0  # A (B, C) layer: whole images only.
    # 4 own images + 2 others went to the captioner.
    assert r.captions.count(want[r.unit]) == VARIANTS
  if llm is first_listed_llm:  # Several candidates: selection had to work.
    assert max(len(r.candidates) for r in results) > 1


# ---------------------------------------------------------------------------
# Crops of a planted bright square through a target pass.


class RedChannel(nn.Module):

  @nn.compact
  def __call__(self, x):
    return x[..., :1]


class SquareNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    return RedChannel(name="red")(x).mean((1, 2))


@pytest.mark.parametrize("crop", [64, 48])
def test_planted_square_crop_through_the_target(tmp_path, crop):
  image = np.zeros((64, 64, 3), np.uint8)
  image[16:32, 24:48] = 255
  transform = preprocess.ImageTransform(resize=64, crop=crop,
                                        mean=(0.0,) * 3, std=(1.0,) * 3)
  target = target_lib.Target(SquareNet(), {}, transform, name="square")
  config = DnDConfig(num_images=1, image_size=64)
  from jax_dissect.analyses.dnd import crops  # pylint: disable=g-import-not-at-top
  got = crops.attention_crops(target, [image], "red", [0],
                              np.ones((1, 1), np.float32), config,
                              CacheStore(tmp_path))[0]
  assert got.boxes == (None, (24, 16, 48, 32))
  assert got.sources == (0, 0)
  # The crop (all square) activates the neuron more than the image.
  assert got.top[0] == 1 and got.activations[1] > got.activations[0]


# ---------------------------------------------------------------------------
# Bad input.


def _one_line_error(fn, match):
  with pytest.raises(ValueError, match=match) as e:
    fn()
  assert "\n" not in str(e.value)


def test_bad_units_and_layer_fail_before_any_work(tmp_path, target, photos):
  store = CacheStore(tmp_path)
  kw = dict(captioner=lambda ims: ["x"] * len(ims), llm=lambda p: "x",
            generator=dnd_testing.NoiseGenerator(),
            clip_embedder=object(), store=store)
  _one_line_error(lambda: describe_and_dissect(target, photos, "conv2", [],
                                               **kw), "units is empty")
  _one_line_error(lambda: describe_and_dissect(target, photos, "conv2", [6],
                                               **kw), "unit 6 is out of range")
  _one_line_error(lambda: describe_and_dissect(target, photos, "conv9", [0],
                                               **kw), "unknown layer")
  _one_line_error(lambda: describe_and_dissect(target, [], "conv2", [0],
                                               **kw), "probe_images is empty")
  _one_line_error(lambda: describe_and_dissect(
      target, photos, "conv2", [0], **{**kw, "generator": None}),
                  "needs generator")
  assert store.misses() == 0  # Nothing was computed.


def test_model_errors_keep_finished_stages(tmp_path, target, photos):
  store = CacheStore(tmp_path)
  config = SMALL_RUN
  def captioner(images):  # Names each image by its pixels.
    return [f"thing {images_lib.fingerprint(im)[:6]}" for im in images]

  base = dict(captioner=captioner, clip_embedder=FeatureClip("thumb-clip",
                                                random_text_embeddings),
              config=config)

  def label_llm(prompt):
    del prompt
    return "a label"

  def bad_generator(prompt, num_images, seed):
    return np.zeros((num_images, 8, 8), np.uint8)  # No colour axis.

  _one_line_error(lambda: describe_and_dissect(
      target, photos, "conv2", [0, 3], llm=label_llm,
      generator=bad_generator, store=store, **base),
                  r"generator \(prompt 'One realistic image of a label'\) "
                  r"returned an array of shape \(3, 8, 8\)")
  # Stages 1-2 were saved: the rerun with a good generator reuses them.
  store2 = CacheStore(tmp_path)
  describe_and_dissect(target, photos, "conv2", [0, 3],
                       llm=label_llm,
                       generator=dnd_testing.NoiseGenerator(), store=store2,
                       **base)
  for stage in ("crops", "captions", "simplified", "candidates"):
    assert store2.stats[f"{stage}:miss"] == 0, stage

  # An empty answer for unit 3: a one-line error naming it; unit 0's
  # shortened captions (done first, unit_chunk=1) and all captions are kept.
  class ScriptedLLM:
    """Answers "a label" for its first `answers` calls, then "  "."""

    def __init__(self, answers):
      self.answers = answers

    def identity(self):
      return "scripted-llm"  # Both runs are the same model to the store.

    def __call__(self, prompt):
      self.answers -= 1
      return "a label" if self.answers >= 0 else "  "

  store3 = CacheStore(tmp_path / "other")
  _one_line_error(lambda: describe_and_dissect(
      target, photos, "conv2", [0, 3], llm=ScriptedLLM(3),
      generator=dnd_testing.NoiseGenerator(), store=store3, **base),
                  "unit 3: the language model returned an empty answer")
  store4 = CacheStore(tmp_path / "other")
  clip_config = DnDConfig(**{**config.__dict__, "selection": "clip_dissect"})
  results = describe_and_dissect(target, photos, "conv2", [0, 3],
                                 llm=ScriptedLLM(10**6), store=store4,
                                 **{**base, "config": clip_config})
  assert results[0].captions != results[1].captions
  assert store4.stats["captions:miss"] == 0
  assert store4.stats["simplified:hit"] == 1
  assert store4.stats["simplified:miss"] == 1


class FeatureClip:
  """A stand-in CLIP: an image's embedding is what the detector compares
  (`_features`); texts are embedded by `embed_text_fn`."""

  def __init__(self, name, embed_text_fn):
    self.name, self.embed_texts = name, embed_text_fn

  def identity(self):
    return self.name

  def embed_images(self, images):
    return np.stack([_features(images_lib.load(im)) for im in images])


def random_text_embeddings(texts):
  rng = np.random.default_rng(len(texts))
  e = rng.normal(size=(len(texts), 3 * 32 * 32))
  return e / np.linalg.norm(e, axis=1, keepdims=True)
