"""Regenerates docs/report_screenshot.png: the HTML report of a demo run.

Usage (needs chromium, see README "Analyses"):
  python docs/report_screenshot.py --out=docs/report_screenshot.png

The demo results directory is synthetic (planted neurons, a hand-made P over
a small concept set; no model or CLIP weights) but its top images are the
real photos of ../shared/data/imagenet_sample, so the thumbnails are real.
Stability and a profile are computed with the library, then the report is
built and photographed by headless Chromium.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
# pylint: disable=g-import-not-at-top,wrong-import-position
import synthetic_results

from jax_dissect import report
from jax_dissect import results_dir
from jax_dissect.analyses.profile import layer_profile as profile
from jax_dissect.analyses.stability import bootstrap as stability

_OUT = flags.DEFINE_string("out", os.path.join(REPO, "docs",
                                               "report_screenshot.png"),
                           "PNG to write.")
_PHOTOS = flags.DEFINE_string(
    "photos", os.path.join(REPO, "..", "shared", "data", "imagenet_sample"),
    "Folder of <wnid>_<name>.jpg photos in class order.")
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


def main(argv):
  del argv
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  if not chromium:
    sys.exit("error: chromium not found; apt-get install -y chromium")
  work = _KEEP.value or tempfile.mkdtemp()
  path = synthetic_results.write_results(
      os.path.join(work, "demo_run"), make_world(_PHOTOS.value),
      similarity_kwargs={"top_k": 5})
  results = results_dir.load_results(path)
  analysis = results_dir.analysis_dir(results)
  rows, summaries = stability.results_stability(results, num_resamples=20,
                                                top_ks=(5, 10, 16, 50))
  stability.write_stability(rows, summaries, analysis)
  profile.write_profile(profile.profile_results(
      results, profile.TableCategorizer(CATEGORY), tau=1.0), analysis)
  html = report.build_report(results, image_root=_PHOTOS.value,
                             title="jax_dissect report: demo run")
  with tempfile.TemporaryDirectory() as user_dir:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         f"--user-data-dir={user_dir}", "--hide-scrollbars",
         "--window-size=1280,1200",
         f"--screenshot={os.path.abspath(_OUT.value)}",
         "file://" + os.path.abspath(html) + "#layer=layer4"],
        check=True, capture_output=True)
  print(_OUT.value)


if __name__ == "__main__":
  app.run(main)
