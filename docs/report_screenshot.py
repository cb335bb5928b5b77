"""Regenerates the report's screenshots in docs/ (docs/report.md shows them).

Usage (needs chromium: apt-get install chromium):
  python docs/report_screenshot.py

Writes docs/report_screenshot.png (a layer's table), docs/report_neuron.png
(a neuron's page) and docs/report_analyses.png (the Analyses tab). The demo
run is synthetic (planted neurons, a hand-made P over a small concept set;
no model or CLIP weights), its top images the real photos of
../shared/data/imagenet_sample; stability and profile are computed with the
library, a Describe-and-Dissect record (with a crop) and a sparse
autoencoder basis are planted. The browser is driven over the DevTools
protocol (tests/helpers/browser.py), 1400 x 900 px.
"""

import os
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from jax_dissect import analyses
from jax_dissect import report
from jax_dissect.configs import shared_data
from jax_dissect.store import results as results_lib
from tests.helpers import browser
from tests.helpers import synthetic_run

_OUT = flags.DEFINE_string("out_dir", os.path.join(REPO, "docs"),
                           "Directory of the PNGs.")
_PHOTOS = flags.DEFINE_string(
    "photos", None, "Folder of <wnid>_<name>.jpg photos in class order "
    "(default: the shared data's imagenet_sample).")
_KEEP = flags.DEFINE_string("keep_dir", None,
                            "Keep the demo results directory here.")

# Groups of ImageNet class indices and the concepts their photos show.
GROUPS = {
    "dog": (range(151, 175), ("dog", "fur", "grass")),
    "bird": (range(7, 25), ("bird", "feathers", "sky")),
    "car": ((436, 468, 511, 609, 627, 656, 717, 751, 817, 864), ("car",
                                                                  "wheel")),
    "fruit": (range(948, 958), ("fruit", "red")),
    "fish": (range(0, 7), ("fish", "water")),
    "landscape": (range(970, 980), ("mountain landscape", "sky", "water")),
}
CATEGORY = {"dog": "object", "bird": "object", "car": "object",
            "fruit": "object", "fish": "object", "fur": "texture",
            "feathers": "texture", "wheel": "part", "red": "color",
            "grass": "material", "water": "material", "sky": "scene",
            "mountain landscape": "scene", "snow": "material",
            "stripes": "texture"}


def make_world(photos):
  files = sorted(f for f in os.listdir(photos) if f.endswith(".jpg"))
  concepts = list(CATEGORY)
  rng = np.random.default_rng(0)
  index, member = [], []
  for g, (classes, shown) in GROUPS.items():
    for c in classes:
      index.append(c)
      member.append((g, shown))
  n = len(index)
  p = 0.2 + 0.01 * rng.standard_normal((n, len(concepts)))
  for i, (_, shown) in enumerate(member):
    for j, s in enumerate(shown):  # The group's own concept comes first.
      p[i, concepts.index(s)] += 0.1 if j == 0 else 0.05
  group_of = np.array([g for g, _ in member])
  shows = lambda s: np.array([s in sh for _, sh in member], np.float32)
  noise = lambda: 0.3 * rng.standard_normal(n)
  layer3 = np.stack([2 * shows(s) + noise()
                     for s in ("fur", "feathers", "wheel", "water", "red",
                               "sky")] + [rng.standard_normal(n)
                                          for _ in range(4)], 1)
  layer4 = np.stack([2 * (group_of == g) + noise() for g in GROUPS] +
                    [rng.standard_normal(n) for _ in range(4)], 1)
  return {"concepts": concepts, "image_ids": [files[c] for c in index],
          "P": p.astype(np.float32),
          "image_embeddings": np.eye(n, 8, dtype=np.float32),
          "text_embeddings": np.eye(len(concepts), 8, dtype=np.float32),
          "activations": {"layer3": layer3.astype(np.float32),
                          "layer4": layer4.astype(np.float32)}}


def plant(run):
  """A DnD record with a crop for layer4 unit 0, and an SAE basis."""
  dog = run.layer_neurons("layer4")[0]
  dnd = results_lib.AnalysisOutput(
      "dnd",
      tables={"dnd": results_lib.Table(
          [{"layer": "layer4", "unit": 0, "description": "dog faces",
            "label_2": "puppies", "label_3": "fur", "score": 0.83,
            "candidates": "dog faces; puppies; fur"}],
          "Describe-and-Dissect descriptions (layer4)", per_neuron=True,
          neuron_columns=("description", "score"))},
      documents={"dnd_details": [{
          "layer": "layer4", "unit": 0,
          "labels": ["dog faces", "puppies", "fur"],
          "candidates": ["dog faces", "puppies", "fur"], "score": 0.83,
          "top_images": [{"image": dog.top_images[i], "box": box,
                          "activation": 3.0 - 0.2 * i}
                         for i, box in enumerate(([90, 40, 300, 260], None,
                                                  [60, 100, 250, 330]))]}]})
  rng = np.random.default_rng(1)
  ids = run.image_ids
  sae = results_lib.AnalysisOutput("features", tables={
      "features_layer4": results_lib.Table(
          [{"layer": "layer4", "unit": u, "description": c,
            "similarity": round(0.3 - 0.02 * u, 3),
            "correlation": round(float(rng.uniform(0.2, 0.7)), 3),
            "q_value": round(float(rng.uniform(0, 0.05)), 4),
            "top_images": ";".join(ids[j] for j in rng.choice(
                len(ids), 5, replace=False))}
           for u, c in enumerate(("dog", "feathers", "wheel", "water",
                                  "red", "sky"))],
          "SAE features of layer4", per_neuron=True, basis="sae:layer4")})
  for output in (dnd, sae):
    results_lib.write_analysis(output, run.analysis_dir(),
                               options={"demo": True})


def main(argv):
  del argv
  photos = _PHOTOS.value or shared_data.path("imagenet_sample")
  work = _KEEP.value or tempfile.mkdtemp()
  path = synthetic_run.write_results(os.path.join(work, "demo_run"),
                                     make_world(photos),
                                     similarity_kwargs={"top_k": 5})
  run = results_lib.load_run(path)
  for resamples in (10, 20):  # A rerun with other options.
    config = analyses.make_config("stability", {
        "num_resamples": resamples, "top_ks": (5, 10, 16, 50)})
    results_lib.write_analysis(analyses.run("stability", run, config),
                               run.analysis_dir(), options=config.to_dict())
  table = os.path.join(work, "categories.tsv")
  with open(table, "w", encoding="utf-8") as f:
    f.write("".join(f"{k}\t{v}\n" for k, v in CATEGORY.items()))
  config = analyses.make_config("profile", {"categorizer": "table",
                                            "category_table": table,
                                            "tau": 1.0})
  results_lib.write_analysis(analyses.run("profile", run, config),
                             run.analysis_dir(), options=config.to_dict())
  plant(run)
  html = report.build_report(run, image_root=photos,
                             title="jax_dissect report: demo run")
  url = "file://" + os.path.abspath(html)
  with browser.Chromium(width=1400, height=900) as chrome:
    for fragment, name in (("#tab=layer4", "report_screenshot.png"),
                           ("#tab=layer4&unit=0", "report_neuron.png"),
                           ("#tab=analyses", "report_analyses.png")):
      chrome.open(url + fragment)
      chrome.evaluate("Promise.all(Array.from(document.images).map("
                      "function(i){return i.decode().catch(function(){})}))")
      out = os.path.join(_OUT.value, name)
      chrome.screenshot(out, full_page=name == "report_neuron.png")
      print(out)


if __name__ == "__main__":
  app.run(main)
