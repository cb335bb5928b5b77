"""Runs for the report's tests and benchmarks: a synthetic run whose probe
folder is named in its config (as describe writes it), and a run of any
number of neurons.

  world = report_runs.sorted_world(n_per_class=6)
  images = synthetic_run.write_images(root / "images", world)
  run = report_runs.write_run(root / "res", world, images)
  big = report_runs.write_big_run(root / "big", images, num_neurons=10_000)
"""

import os

import numpy as np

from jax_dissect.data import probes
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth


def sorted_world(**kwargs):
  """A synthetic world whose image ids sort in probe order, so that an
  image folder of them is the run's probe set."""
  world = synth.make_world(**kwargs)
  world["image_ids"] = [f"img/{i:03d}_{synth.CLASSES[c].replace(' ', '_')}"
                        ".png" for i, c in enumerate(world["y"])]
  return world


def write_run(path, world, images) -> results_lib.Run:
  """A synthetic run whose config names its probe folder `images`."""
  path = os.fspath(path)
  synth.write_results(path, world, config={"d_probe": f"folder:{images}"})
  return results_lib.load_run(path)


def write_big_run(path, images, num_neurons=10_000, seed=0,
                  layers=1) -> results_lib.Run:
  """A run of `num_neurons` neurons (over `layers` layers) on the images
  of an image folder, with 5 alternatives and 10 top images each."""
  rng = np.random.default_rng(seed)
  ids = probes.ImageFolder(os.fspath(images)).ids
  concepts = [f"concept {i}" for i in range(500)]
  neurons = []
  per_layer = -(-num_neurons // layers)
  for k in range(num_neurons):
    c = rng.choice(len(concepts), 6, replace=False)
    s = np.sort(rng.random(6))[::-1]
    neurons.append(results_lib.Neuron(
        f"layer{1 + k // per_layer}", k % per_layer, concepts[c[0]],
        float(s[0]),
        tuple((concepts[j], float(v)) for j, v in zip(c[1:], s[1:])),
        tuple(ids[j] for j in rng.choice(len(ids), 10, replace=False))))
  results_lib.write_run(os.fspath(path), neurons=neurons, concepts=concepts,
                        image_ids=ids, arrays={},
                        config={"similarity_fn": "soft_wpmi",
                                "d_probe": f"folder:{images}"})
  return results_lib.load_run(os.fspath(path))
