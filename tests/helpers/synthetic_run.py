"""Synthetic describe_neurons results directories with planted answers.

Builds a tiny world: a deterministic bag-of-words text embedder, probe images
whose CLIP-like embeddings sit near their class's text embedding, P = image
embeddings @ concept embeddings^T, and layers with planted neurons:

- "fc": neuron k fires on the images of class k (a class layer);
- "layer4": neurons 0..P-1 each fire on one class ("planted"), the rest are
  pure noise.

and writes them as a run (jax_dissect.store.results.write_run), labels computed
with the real kernels.
"""

import hashlib
import os

import numpy as np

from jax_dissect import similarity
from jax_dissect.store import integrity
from jax_dissect.store import results

DIM = 64
CLASSES = ("goldfish", "tabby cat", "fire truck", "pizza", "lighthouse",
           "volcano", "zebra", "umbrella")
DISTRACTORS = ("red", "blue", "green", "striped", "wooden", "metal", "grass",
               "sky", "wheel", "leg", "forest", "kitchen")


def _word_vector(word: str) -> np.ndarray:
  seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
  return np.random.default_rng(seed).standard_normal(DIM)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# A direction all embeddings share, so that cosines are mostly positive, as
# CLIP's image/text cosines are (rank_reorder needs positive P).
_SHARED = _unit(_word_vector("<shared>"))


def fake_embed(texts):
  """Deterministic bag-of-words embedder: (n, DIM) L2-normalised rows."""
  out = np.stack([sum(_word_vector(w) for w in t.lower().split()) if t.split()
                  else _word_vector("") for t in texts])
  return _unit(_unit(out) + 1.2 * _SHARED).astype(np.float32)


def make_world(n_per_class=12, n_noise_neurons=4, n_planted=4, seed=0,
               classes=CLASSES, distractors=DISTRACTORS):
  """Returns dict with concepts, image_ids, labels_of_images, P, embeddings,
  and activations per layer."""
  rng = np.random.default_rng(seed)
  concepts = list(classes) + list(distractors)
  y = np.repeat(np.arange(len(classes)), n_per_class)
  n = len(y)
  class_emb = fake_embed(classes)
  img = (0.8 * class_emb[y] + rng.standard_normal((n, DIM)) / np.sqrt(DIM)
         + 0.5 * _SHARED)
  img = _unit(img).astype(np.float32)
  text = fake_embed(concepts)
  p = img @ text.T
  onehot = np.eye(len(classes), dtype=np.float32)[y]
  fc = 3.0 * onehot + 0.3 * rng.standard_normal(onehot.shape)
  planted = 3.0 * onehot[:, :n_planted] + 0.3 * rng.standard_normal(
      (n, n_planted))
  noise = rng.standard_normal((n, n_noise_neurons))
  layer4 = np.concatenate([planted, noise], axis=1)
  image_ids = [f"img/{classes[c].replace(' ', '_')}_{i:03d}.png"
               for i, c in enumerate(y)]
  return {"concepts": concepts, "image_ids": image_ids, "y": y,
          "P": p.astype(np.float32), "image_embeddings": img,
          "text_embeddings": text,
          "activations": {"layer4": layer4.astype(np.float32),
                          "fc": fc.astype(np.float32)}}


def write_results(path, world, similarity_fn="soft_wpmi",
                  similarity_kwargs=None, relative_arrays=False, seed=0,
                  config=None):
  """Writes `world` as a results directory at `path`; returns `path`.

  `config` entries are added to (or override) its config.json."""
  similarity_kwargs = ({"top_k": 10} if similarity_kwargs is None
                       else dict(similarity_kwargs))
  os.makedirs(path, exist_ok=True)
  cache = os.path.join(path, "cache")
  os.makedirs(cache, exist_ok=True)

  def save(name, arr):
    np.save(os.path.join(cache, name), arr)
    integrity.write_check(os.path.join(cache, name))  # As the cache does.
    return (os.path.join("cache", name) if relative_arrays
            else os.path.abspath(os.path.join(cache, name)))

  arrays = {"concept_activations": save("P.npy", world["P"]),
            "image_embeddings": save("img.npy", world["image_embeddings"]),
            "text_embeddings": save("text.npy", world["text_embeddings"]),
            "activations": {}}
  neurons = []
  for layer, a in world["activations"].items():
    arrays["activations"][layer] = save(f"A_{layer}.npy", a)
    with open(os.path.join(cache, f"A_{layer}.json"), "w") as f:
      f.write(f'{{"layer": "{layer}"}}')  # The cache's description.
    sim = similarity.compute(similarity_fn, a, world["P"], seed=seed,
                             devices=1, fit=False, **similarity_kwargs)
    top = np.argsort(-a, axis=0, kind="stable")[:10]
    neurons += results.describe(
        sim, world["concepts"], layer=layer, top_n=5,
        top_images=[[world["image_ids"][i] for i in top[:, k]]
                    for k in range(a.shape[1])])
  results.write_run(
      path, neurons=neurons, concepts=world["concepts"],
      image_ids=world["image_ids"], arrays=arrays,
      config={"similarity_fn": similarity_fn,
              "similarity_kwargs": similarity_kwargs, "seed": seed,
              "target_model": "synthetic", "jax_dissect_version": "0.1.0",
              **(config or {})})
  return path


def write_images(root, world, size=48):
  """Writes a small PNG for every image id under `root`; returns root."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  palette = np.random.default_rng(1).integers(0, 255, (len(CLASSES), 3))
  for image_id, c in zip(world["image_ids"], world["y"]):
    path = os.path.join(root, image_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.zeros((size, size, 3), np.uint8) + palette[c].astype(np.uint8)
    arr[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255 - palette[c]
    Image.fromarray(arr).save(path)
  return root
