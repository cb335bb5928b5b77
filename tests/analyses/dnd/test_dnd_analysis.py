"""The dnd analysis and scripts/describe_and_dissect.py on a real run.

A describe_neurons run is made here with the CIFAR-100 smoke settings
(random CIFAR ResNet-18, small random CLIP) on a few dozen shared photos,
one of them unreadable (the run skips it; DnD must too). Then:

- in-process: every stage runs with tiny random captioner, language model,
  noise generator and the run's own CLIP, lands in the run's cache, and a
  second run is all cache hits; dnd.csv has the issue's columns and the
  report shows the DnD description beside the CLIP-Dissect label;
- the script: all cache hits; one-line errors for no units, an unknown
  layer, a generator of the wrong shape and an empty LLM answer, with the
  stages done before the error kept;
- a probe set that cannot be rebuilt, or no longer matches, is one line.
"""

import csv
import os
import subprocess
import sys

from PIL import Image
import pytest

from configs import resnet18_cifar100
from configs import shared_data
from jax_dissect import analyses
from jax_dissect import pipeline
from jax_dissect import report
from jax_dissect.analyses import dnd as dnd_analysis
from jax_dissect.analyses.dnd import CSV_COLUMNS
from jax_dissect.analyses.dnd import images as dnd_images
from jax_dissect.data import probes as data_lib
from jax_dissect.store import results as results_lib
from tests import helpers
from tests.helpers import dnd_models as dnd_testing

REPO = helpers.REPO
SCRIPT = os.path.join(REPO, "scripts", "describe_and_dissect.py")
NUM_PHOTOS = 30
BROKEN = "n0_broken.jpg"  # Sorts among the photos: rows after it shift.
LAYER = "layer4"
TINY = {"captioner": "tests.helpers.dnd_models:captioner",
        "llm": "tests.helpers.dnd_models:llm",
        "generator": "tests.helpers.dnd_models:generator"}
SMALL = {"num_images": 3, "num_crops": 2, "image_size": 64,
         "num_candidates": 3, "num_generated": 3, "beta": 2,
         "clip_top_k": 3, "unit_chunk": 1}
STAGES = ("crops", "captions", "simplified", "candidates", "generated",
          "generated_acts", "clip_images", "scores")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("dnd_run")
  photos = tmp / "photos"
  photos.mkdir()
  for path in dnd_testing.shared_photos(NUM_PHOTOS):
    os.symlink(path, photos / os.path.basename(path))
  (photos / BROKEN).write_bytes(b"not a jpeg")
  concepts = tmp / "concepts.txt"
  with open(shared_data.path("concepts", "broden_labels_clean.txt"),
            encoding="utf-8") as f:
    concepts.write_text("".join(f.readlines()[:40]))
  config = resnet18_cifar100.get_config("smoke")
  config.d_probe = f"folder:{photos}"
  config.concept_set = str(concepts)
  config.target_layers = f"layer3,{LAYER}"
  config.result_dir = str(tmp / "run")
  config.activation_dir = str(tmp / "cache")
  config.batch_size = 16
  pipeline.describe_neurons(config)
  return tmp


def _run(smoke_run, **options):
  results = results_lib.load_run(smoke_run / "run")
  output = analyses.run("dnd", results, layer=LAYER,
                        **{**TINY, **SMALL, **options})
  results_lib.write_analysis(output, results.analysis_dir())
  return results, output


def _computed(output) -> str:
  return output.summary[-1]


def test_every_stage_runs_then_all_cache_hits(smoke_run):
  results, output = _run(smoke_run, units=(0, 7))
  assert BROKEN in results.skipped_images
  assert len(results.image_ids) == NUM_PHOTOS
  table = output.tables["dnd"]
  assert [list(r) for r in table.rows] == [list(CSV_COLUMNS)] * 2
  assert [(r["layer"], r["unit"]) for r in table.rows] == [(LAYER, 0),
                                                            (LAYER, 7)]
  for r in table.rows:
    assert r["description"] and r["description"] in r["candidates"]
  for stage in STAGES:  # Every stage ran ...
    assert f"{stage} " in _computed(output), _computed(output)
  cache = smoke_run / "cache"
  for stage in STAGES:  # ... and its outputs are in the run's cache.
    assert os.listdir(cache / f"dnd_{stage}"), stage
  details = output.documents["dnd_details"]
  assert {d["unit"] for d in details} == {0, 7}
  for d in details:
    assert len(d["top_images"]) == 3 and len(d["captions"]) == 3
    assert all(t["image"] in results.image_ids for t in d["top_images"])

  # The files and the report: the DnD description beside the label.
  analysis = smoke_run / "run" / "analysis"
  with open(analysis / "dnd.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(CSV_COLUMNS)
  data = report.collect_report_data(results, num_thumbs=0)
  view = next(v for v in data["views"] if v["id"] == LAYER)
  keys = [c["key"] for c in view["columns"]]
  assert keys[0] == "dnd.description" and "dnd.score" in keys
  neurons = {n["unit"]: n for n in view["rows"]}
  assert neurons[7]["dnd.description"] == table.rows[1]["description"]
  assert neurons[7]["label"] == results.layer_neurons(LAYER)[7].description
  assert "dnd.description" not in neurons[1]

  # A second run: every stage from the cache, the same descriptions.
  _, again = _run(smoke_run, units=(0, 7))
  assert _computed(again).endswith(" 0 computed"), _computed(again)
  assert again.tables["dnd"].rows == table.rows

  # clip_dissect: stages 1-2 reused; the run's CLIP embeds the candidates
  # and its cached probe embeddings are used.
  _, picked = _run(smoke_run, units=(0, 7), selection="clip_dissect")
  assert _computed(picked).endswith("computed (clip_texts 1)"), (
      _computed(picked))
  for r, p in zip(table.rows, picked.tables["dnd"].rows):
    assert p["candidates"] == r["candidates"]


def _script(*flags):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, SCRIPT, *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300,
                        check=False)


def _flags(smoke_run, **options):
  options = {"layer": LAYER, **TINY, **SMALL, **options}
  return [f"--results_dir={smoke_run / 'run'}"] + [
      f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
      for k, v in options.items()]


def _one_line_error(proc, start):
  assert proc.returncode == 2, proc.stderr[-3000:]  # Bad usage (cli.md).
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: " + start), last
  return last


def test_script_all_cache_hits_and_one_line_errors(smoke_run):
  _run(smoke_run, units=(0, 7))  # Made (or found) in-process.
  proc = _script(*_flags(smoke_run, units=(0, 7)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1].endswith(" 0 computed"), (
      proc.stdout)

  _one_line_error(_script(*_flags(smoke_run, units="")), "units is empty")
  _one_line_error(_script(*_flags(smoke_run, layer="layer9")),
                  "layer 'layer9' is not in the results")
  _one_line_error(_script(*_flags(smoke_run, units="0,512")),
                  "unit 512 is out of range")
  cheap = {"captioner": "tests.helpers.dnd_models:named_captioner",
           "llm": "tests.helpers.dnd_models:label_llm"}
  _one_line_error(
      _script(*_flags(smoke_run, units="3", **cheap,
                      generator="tests.helpers.dnd_models:flat_generator")),
      "the generator (prompt 'One realistic image of a label') returned an "
      "array of shape (3, 8, 8)")
  # Stages 1-2 were kept: a good generator reuses them.
  _, output = _run(smoke_run, units=(3,), **cheap)
  for stage in ("crops", "captions", "simplified", "candidates"):
    assert f"{stage} " not in _computed(output), _computed(output)
  assert "generated " in _computed(output)

  _one_line_error(
      _script(*_flags(smoke_run, units="4", **{
          **cheap, "llm": "tests.helpers.dnd_models:empty_llm"})),
      "unit 4: the language model returned an empty answer")
  _, output = _run(smoke_run, units=(4,), **cheap)
  for stage in ("crops", "captions", "simplified"):
    assert f"{stage} " not in _computed(output), _computed(output)
  assert "candidates 1" in _computed(output)


def _copy_run(smoke_run, tmp_path, **config):
  """The smoke run written again with `config` changed."""
  run = results_lib.load_run(smoke_run / "run")
  run_dir = tmp_path / "run"
  results_lib.write_run(run_dir, neurons=run.neurons, concepts=run.concepts,
                        image_ids=run.image_ids,
                        config={**run.config, **config}, arrays=run.arrays,
                        skipped_images=run.skipped_images)
  return results_lib.load_run(run_dir)


def test_probe_set_that_cannot_be_rebuilt_is_one_line(smoke_run, tmp_path):
  gone = _copy_run(smoke_run, tmp_path, d_probe=f"folder:{tmp_path}/gone")
  with pytest.raises(ValueError, match="cannot rebuild the run's probe set "
                     "d_probe='folder:.*/gone': image folder") as e:
    dnd_analysis.run_probe_images(gone)
  assert "\n" not in str(e.value)
  fewer = tmp_path / "fewer"
  fewer.mkdir()
  for path in dnd_testing.shared_photos(5):
    os.symlink(path, fewer / os.path.basename(path))
  changed = _copy_run(smoke_run, tmp_path / "x", d_probe=f"folder:{fewer}")
  with pytest.raises(ValueError, match="rebuilt now has 5 images but the "
                     f"run's image_ids.txt lists {NUM_PHOTOS}"):
    dnd_analysis.run_probe_images(changed)
  probe = dnd_analysis.run_probe_images(results_lib.load_run(
      smoke_run / "run"))
  assert [os.path.basename(p) for p in probe] == results_lib.load_run(
      smoke_run / "run").image_ids


class _Records(data_lib.ProbeSet):
  """A probe set of in-memory images, without files (as a TFDS split)."""

  def __init__(self, colors):
    self.colors = colors

  @property
  def ids(self):
    return [f"records/{i}" for i in range(len(self.colors))]

  def load(self, index):
    return Image.new("RGB", (8, 8), self.colors[index])

  def fingerprint(self):
    return f"records{self.colors}"


def test_probe_images_without_files_are_read_lazily():
  records = _Records(["red", "blue", "green"])
  items = dnd_images.probe_images(data_lib.Subset(records, [2, 0]))
  assert all(isinstance(i, dnd_images.ProbeImage) for i in items)
  assert dnd_images.load(items[0]).getpixel((0, 0)) == (0, 128, 0)
  prints = [dnd_images.fingerprint(i) for i in items]
  assert len(set(prints)) == 2
  again = dnd_images.probe_images(data_lib.Subset(records, [2, 0]))
  assert [dnd_images.fingerprint(i) for i in again] == prints
  other = dnd_images.probe_images(data_lib.Subset(_Records(["red", "blue",
                                                           "white"]), [2]))
  assert dnd_images.fingerprint(other[0]) != prints[0]
