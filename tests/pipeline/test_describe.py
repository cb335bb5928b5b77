"""describe_neurons in process: wiring, cache reuse and invalidation, errors."""

import csv
import glob
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from jax_dissect import pipeline
from jax_dissect.clip import embedder_base
from tests.helpers import pipeline_config


@pytest.fixture
def small_probe(tmp_path):
  """A folder of 24 of the shared photos (copied to tmp, read from there)."""
  folder = tmp_path / "probe"
  folder.mkdir()
  for name in sorted(os.listdir(pipeline_config.SAMPLE))[:24]:
    shutil.copy(os.path.join(pipeline_config.SAMPLE, name), folder / name)
  return folder


@pytest.fixture
def concepts_file(tmp_path):
  path = tmp_path / "concepts.txt"
  path.write_text("dog\ncat\n\ncar\ntree\nwater\ndog\nsky\n", encoding="utf-8")
  return path


def _computed(lines):
  return [l[len("computing: "):] for l in lines if l.startswith("computing:")]


def _read_csv(path):
  with open(path, encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_one_hot_wiring_labels_are_top_image_classes(tmp_path):
  """P = one-hot classes of the 1000 photos: label = top photo's class.

  lam=0 (no prior) makes the statement exact: the log-likelihood of
  soft_wpmi is largest for the class of the rank-0 image, since its weight
  p_0 is the largest. (With the prior, a class that tops many neurons is
  discounted, which is the point of PMI.)
  """
  p = np.eye(1000, dtype=np.float32)
  np.save(tmp_path / "p.npy", p)
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{pipeline_config.SAMPLE}",
                   concept_set=pipeline_config.IMAGENET_LABELS, target_layers="conv1,layer4,fc",
                   concept_activations=str(tmp_path / "p.npy"),
                   similarity_kwargs={"lam": 0.0}, batch_size=100)
  results = pipeline.describe_neurons(config)
  assert results.image_ids[0] == "n01440764_tench.jpg"
  row = {image_id: i for i, image_id in enumerate(results.image_ids)}
  for n in results.neurons:
    assert n.description == results.concepts[row[n.top_images[0]]], (
        n.layer, n.unit)
  assert len(results.layer_neurons("fc")) == 100
  # The top image ids written out are the probe rows the labels came from.
  rows = _read_csv(os.path.join(config.result_dir, "descriptions.csv"))
  assert len(rows) == 64 + 512 + 100


def test_a_given_p_is_copied_into_the_cache_and_constant_columns_warn(
    tmp_path, small_probe, concepts_file, log_lines):
  """A given P: its constant columns are counted in a warning (issue 25),
  and it is copied into the cache, so every array of the run is read from
  the run's cache (readers trust arrays.json only there)."""
  p = np.random.default_rng(0).random((24, 6)).astype(np.float32)
  p[:, 2] = 0.5
  np.save(tmp_path / "p.npy", p)
  config = pipeline_config.config(
      tmp_path, d_probe=f"folder:{small_probe}",
      concept_set=str(concepts_file), target_layers="layer4",
      concept_activations=str(tmp_path / "p.npy"))
  run = pipeline.describe_neurons(config)
  assert any("1 of 6 concept columns are constant" in l for l in log_lines)
  os.remove(tmp_path / "p.npy")
  from jax_dissect.store import results as results_lib  # pylint: disable=g-import-not-at-top
  loaded = results_lib.load_run(run.path)
  assert loaded.arrays["cache_root"] == str(tmp_path / "cache")
  np.testing.assert_array_equal(loaded.concept_activations(), p)


def test_cache_reuse_and_invalidation(tmp_path, small_probe, concepts_file,
                                      log_lines):
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file), shard_images=10)
  first = pipeline.describe_neurons(config)
  computed = _computed(log_lines)
  assert any(c.startswith("CLIP image embeddings") for c in computed)
  assert any(c.startswith("activations [layer1, layer4]") for c in computed)
  assert first.concepts == ["dog", "cat", "car", "tree", "water", "sky"]

  log_lines.clear()
  second = pipeline.describe_neurons(config)
  assert _computed(log_lines) == []
  assert sum("cache hit" in l for l in log_lines) == 1 + 1 + 1 + 1 + 2 + 2
  assert first.neurons == second.neurons

  # One concept changed: text embeddings, P and labels are recomputed; image
  # embeddings and activations are reused.
  concepts_file.write_text("dog\ncat\ncar\ntree\nwater\nclouds\n",
                           encoding="utf-8")
  log_lines.clear()
  pipeline.describe_neurons(config)
  computed = _computed(log_lines)
  assert any(c.startswith("CLIP text embeddings") for c in computed)
  assert any(c.startswith("concept activations P") for c in computed)
  assert not any(c.startswith(("CLIP image", "activations")) for c in computed)

  # One image changed: image embeddings and activations are recomputed.
  victim = sorted(os.listdir(small_probe))[5]
  img = np.asarray(Image.open(small_probe / victim)).copy()
  img[:20] = 255 - img[:20]
  Image.fromarray(img).save(small_probe / victim, format="JPEG")
  log_lines.clear()
  pipeline.describe_neurons(config)
  computed = _computed(log_lines)
  assert any(c.startswith("CLIP image embeddings") for c in computed)
  assert any(c.startswith("activations [layer1, layer4]") for c in computed)


def test_results_directory_files(tmp_path, small_probe, concepts_file,
                                 monkeypatch):
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file))
  config.text_batch_size = 3  # The text tower's own batch (not batch_size).
  text_batches = []
  embed_texts = embedder_base.Embedder.embed_texts

  def recorded(self, texts, batch_size=256, **kwargs):
    text_batches.append(batch_size)
    return embed_texts(self, texts, batch_size, **kwargs)

  monkeypatch.setattr(embedder_base.Embedder, "embed_texts", recorded)
  results = pipeline.describe_neurons(config)
  assert text_batches == [3] and config.batch_size != 3
  out = results.path
  for name in ("descriptions.csv", "neurons.jsonl", "config.json",
               "concepts.txt", "image_ids.txt", "arrays.json"):
    assert os.path.exists(os.path.join(out, name)), name
  rows = _read_csv(os.path.join(out, "descriptions.csv"))
  assert list(rows[0]) == ["layer", "unit", "description", "similarity"]
  assert len(rows) == 64 + 512
  assert {r["description"] for r in rows} <= set(results.concepts)
  assert all(np.isfinite(float(r["similarity"])) for r in rows)
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out, "neurons.jsonl"), encoding="utf-8") as f:
    first = json.loads(f.readline())
  assert len(first["alternatives"]) == 5
  assert len(first["top_images"]) == 10
  assert set(first["top_images"]) <= set(results.image_ids)
  with open(os.path.join(out, "arrays.json"), encoding="utf-8") as f:
    arrays = json.load(f)
  a = np.load(arrays["activations"]["layer4"])
  p = np.load(arrays["concept_activations"])
  assert a.shape == (24, 512) and p.shape == (24, 6)
  with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
    cfg = json.load(f)
  assert cfg["similarity_fn"] == "soft_wpmi"
  assert cfg["similarity_kwargs"] == {"top_k": 5}
  assert "activations" in cfg["timings_s"]


def test_unreadable_images_are_skipped_or_fatal(tmp_path, small_probe,
                                                concepts_file):
  (small_probe / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file))
  results = pipeline.describe_neurons(config)
  assert results.skipped_images == ["broken.jpg"]
  assert len(results.image_ids) == 24
  with open(os.path.join(results.path, "skipped_images.txt")) as f:
    assert f.read().split() == ["broken.jpg"]
  config.strict = True
  with pytest.raises(ValueError, match="broken.jpg"):
    pipeline.describe_neurons(config)


def test_top_k_larger_than_probe_is_lowered(tmp_path, small_probe,
                                            concepts_file, log_lines):
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file), similarity_kwargs={},
                   target_layers="layer1")
  results = pipeline.describe_neurons(config)
  assert any("top_k=100 is larger than the 24 probe images" in l
             for l in log_lines)
  assert len(results.layer_neurons("layer1")) == 64


@pytest.mark.parametrize("field,value,match", [
    ("target_model", "resnet19", "unknown model 'resnet19'.*resnet18"),
    ("target_layers", "layer5", "unknown layer.*'layer5'.*layer4"),
    ("similarity_fn", "wmpi", "similarity_fn='wmpi'.*soft_wpmi"),
    ("d_probe", "imgnet_val", "unknown probe data set 'imgnet_val'"),
    ("concept_set", "/nonexistent/concepts.txt", "nonexistent/concepts.txt"),
    ("pool_mode", "median", "pool='median'"),
    ("sharding", "gspmd", "sharding='gspmd'"),
])
def test_bad_options(tmp_path, small_probe, concepts_file, field, value,
                     match):
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file))
  config[field] = value
  with pytest.raises((ValueError, FileNotFoundError), match=match):
    pipeline.describe_neurons(config)


def test_empty_folder_and_bad_precomputed_p(tmp_path, small_probe,
                                            concepts_file):
  (tmp_path / "empty").mkdir()
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{tmp_path / 'empty'}",
                   concept_set=str(concepts_file))
  with pytest.raises(ValueError, match="holds no images"):
    pipeline.describe_neurons(config)
  np.save(tmp_path / "p.npy",
          np.random.default_rng(0).random((3, 6), np.float32))
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file),
                   concept_activations=str(tmp_path / "p.npy"))
  with pytest.raises(ValueError, match=r"shape \(3, 6\); expected .*\(24, 6\)"):
    pipeline.describe_neurons(config)


def test_max_images_takes_the_first_images(tmp_path, small_probe,
                                           concepts_file):
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file), max_images=10,
                   target_layers="layer1")
  results = pipeline.describe_neurons(config)
  assert results.image_ids == sorted(os.listdir(small_probe))[:10]
  config.max_images = -1
  with pytest.raises(ValueError, match="max_images=-1"):
    pipeline.describe_neurons(config)


def _flip_bytes(path, keep_stat=True):
  """Changes bytes near the end of a file in place: same size and mtime."""
  st = os.stat(path)
  with open(path, "r+b") as f:
    f.seek(-24, os.SEEK_END)
    data = f.read(16)
    f.seek(-24, os.SEEK_END)
    f.write(bytes(b ^ 0x5A for b in data))
  if keep_stat:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_damaged_cache_entries_are_logged_and_recomputed(
    tmp_path, small_probe, concepts_file, log_lines):
  """A truncated activation array, an array with bytes changed in place
  (same size and mtime) and a hand-edited labels entry are each logged with
  their path and recomputed; the labels equal the undamaged run's."""
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file), shard_images=10)
  first = pipeline.describe_neurons(config)
  acts = first.arrays["activations"]
  with open(acts["layer4"], "r+b") as f:  # Truncated.
    f.truncate(os.path.getsize(acts["layer4"]) - 100)
  _flip_bytes(acts["layer1"])  # Same size, same mtime.
  _flip_bytes(first.arrays["concept_activations"])
  labels = sorted(glob.glob(str(tmp_path / "cache" / "labels" / "*")))
  assert len(labels) == 2
  for path in labels:  # Labels edited by hand (still valid JSON).
    text = open(path, encoding="utf-8").read()
    open(path, "w", encoding="utf-8").write(text.replace("[", "[ ", 1))
  log_lines.clear()
  second = pipeline.describe_neurons(config)
  damaged = [l for l in log_lines if "damaged" in l]
  for path in [acts["layer4"], acts["layer1"],
               first.arrays["concept_activations"], *labels]:
    assert any(path in l for l in damaged), (path, damaged)
  computed = _computed(log_lines)
  assert any(c.startswith("activations [layer1, layer4]") for c in computed)
  assert any(c.startswith("concept activations P") for c in computed)
  assert sum(c.startswith("labels of") for c in computed) == 2
  assert second.neurons == first.neurons


def test_same_size_rewrite_with_content_fingerprint(
    tmp_path, small_probe, concepts_file, log_lines):
  """An image rewritten with the same size and mtime: the default (stat)
  fingerprint keeps its entries, the content fingerprint recomputes them;
  a rerun of the content fingerprint hashes no file again."""
  bmp = small_probe / "zz_square.bmp"  # A BMP's size depends on its pixels'
  Image.new("RGB", (40, 40), (200, 30, 30)).save(bmp)  # count only.
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file), target_layers="layer4")
  content = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                    concept_set=str(concepts_file), target_layers="layer4",
                    probe_fingerprint="content")
  pipeline.describe_neurons(config)
  pipeline.describe_neurons(content)
  st = os.stat(bmp)
  Image.new("RGB", (40, 40), (20, 200, 240)).save(bmp)
  os.utime(bmp, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert os.path.getsize(bmp) == st.st_size
  log_lines.clear()
  pipeline.describe_neurons(config)
  assert _computed(log_lines) == []  # The documented trade-off.
  log_lines.clear()
  pipeline.describe_neurons(content)
  computed = _computed(log_lines)
  assert any(c.startswith("CLIP image embeddings") for c in computed)
  assert any(c.startswith("activations [layer4]") for c in computed)
  assert any("hashing 1 of 25 files" in l for l in log_lines)
  log_lines.clear()
  pipeline.describe_neurons(content)
  assert _computed(log_lines) == []
  assert not any("hashing" in l for l in log_lines)


def _p_file(tmp_path, kind):
  path = tmp_path / f"p_{kind}.npy"
  if kind == "text":
    path = tmp_path / "p.txt"
    np.savetxt(path, np.ones((24, 6)))
  elif kind == "nan":
    p = np.full((24, 6), 0.2, np.float32)
    p[3, 2] = np.nan
    np.save(path, p)
  elif kind == "int":
    np.save(path, np.ones((24, 6), np.int64))
  elif kind == "3d":
    np.save(path, np.ones((24, 6, 1), np.float32))
  elif kind == "truncated":
    np.save(path, np.ones((24, 6), np.float32))
    with open(path, "r+b") as f:
      f.truncate(200)
  elif kind == "constant":
    np.save(path, np.zeros((24, 6), np.float32))
  return str(path)


@pytest.mark.parametrize("overrides,match", [
    (dict(result_dir="FILE"), r"result_dir='.*file.txt' is a file"),
    (dict(result_dir="FILE/sub"), r"result_dir=.*cannot be created: .* is a "
                                  "file"),
    (dict(result_dir="/sys/jax_dissect_results"),
     r"result_dir='/sys/jax_dissect_results' cannot be created in '/sys'"),
    (dict(activation_dir="FILE"), r"activation_dir=.* is a file"),
    (dict(concept_activations="P:text"), r"concept_activations '.*p.txt' is "
                                         r"not a .npy array file"),
    (dict(concept_activations="P:nan"), r"p_nan.npy' has 1 NaN/inf value\(s\)"
                                        r" \(first at row 3, column 2\)"),
    (dict(concept_activations="P:int"), r"p_int.npy' has dtype int64"),
    (dict(concept_activations="P:3d"), r"p_3d.npy' has shape \(24, 6, 1\)"),
    (dict(concept_activations="P:truncated"), r"p_truncated.npy' is "
                                              "truncated"),
    (dict(p_dtype="int8"), r"p_dtype='int8' is not valid"),
    (dict(probe_fingerprint="md5"), r"probe_fingerprint='md5' is not valid"),
    (dict(xyz=1), r"unknown option 'xyz'"),
    (dict(shard_image=5), r"unknown option 'shard_image'; did you mean "
                          "shard_images"),
    (dict(batch_size="abc"), r"batch_size='abc' has the wrong type; "
                             "expected int"),
    (dict(similarity_kwargs={"top_k": 2.5}), r"similarity_kwargs.top_k=2.5 "
                                             "has the wrong type"),
    (dict(similarity_kwargs={"top_k": 0}), r"top_k=0"),
    (dict(similarity_kwargs={"min_norm": 0.1}), r"soft_wpmi has no hyper-"
                                                r"parameter\(s\) \['min_norm'"),
    (dict(num_threads=-1), r"num_threads=-1 must be >= 0"),
    (dict(text_batch_size=0), r"^text_batch_size=0 must be >= 1$"),
    # Issue 25: NaN/inf hyper-parameters gave NaN scores and one label;
    # top_k=-1 quoted N=1000000000; a constant P gave one label at score 0;
    # results inside the cache would be removed by its cleaning.
    (dict(similarity_kwargs={"a": float("nan")}),
     r"^similarity_kwargs.a=nan must be a finite number$"),
    (dict(similarity_kwargs={"lam": float("inf")}),
     r"^similarity_kwargs.lam=inf must be a finite number$"),
    (dict(similarity_kwargs={"top_k": -1}),
     r"^similarity_kwargs.top_k=-1 must be >= 1$"),
    (dict(concept_activations="P:constant"),
     r"p_constant.npy': every one of its 6 columns is constant"),
    (dict(result_dir="CACHE/results"), r"result_dir=.* is inside "
                                       "activation_dir"),
    (dict(prompt_template="a {} of {}"), r"prompt_template='a {} of {}'"),
])
def test_bad_options_and_files_fail_before_any_stage(
    tmp_path, small_probe, concepts_file, log_lines, overrides, match):
  """Each bad option, path or P file: one ValueError line naming it, before
  the first stage (nothing is scanned, loaded or computed)."""
  if "/sys/" in str(overrides.get("result_dir")) and not os.path.isdir("/sys"):
    pytest.skip("no /sys")
  (tmp_path / "file.txt").write_text("not a directory")
  for key, value in overrides.items():
    if isinstance(value, str) and value.startswith("FILE"):
      overrides[key] = str(tmp_path / "file.txt") + value[len("FILE"):]
    elif isinstance(value, str) and value.startswith("CACHE"):
      overrides[key] = str(tmp_path / "cache") + value[len("CACHE"):]
    elif isinstance(value, str) and value.startswith("P:"):
      overrides[key] = _p_file(tmp_path, value[2:])
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file))
  config = {**config.to_dict(), **overrides}
  with pytest.raises(ValueError, match=match) as e:
    pipeline.describe_neurons(config)
  assert "\n" not in str(e.value) and len(str(e.value)) <= 300
  assert not [l for l in log_lines if l.startswith("stage ")], log_lines
  assert not os.path.exists(tmp_path / "cache" / "scan")


def test_similarity_kwargs_take_every_kernel_key():
  """Every hyper-parameter of every kernel is a typed option (so that
  --config.similarity_kwargs.<key>=value works), unset by default."""
  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  kwargs = pipeline.default_config().similarity_kwargs
  for name in similarity.names():
    for key, default in similarity.get_kernel(name).defaults.items():
      if key != "key":
        assert key in kwargs and kwargs[key] is None, key
        assert kwargs.get_type(key) is type(default), key


def test_run_files_follow_the_umask(tmp_path, small_probe, concepts_file):
  """Under umask 0022 every file a run writes (results and cache, the
  tokenizer built from the pipeline_config.BPE file included) is 0644 and every directory
  0755, so a group can read a shared results directory or cache."""
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file), target_layers="layer4")
  old = os.umask(0o022)
  try:
    pipeline.describe_neurons(config)
  finally:
    os.umask(old)
  wrong = {}
  for root in (tmp_path / "results", tmp_path / "cache"):
    for dirpath, dirnames, filenames in os.walk(root):
      for name in dirnames + filenames:
        path = os.path.join(dirpath, name)
        want = 0o755 if os.path.isdir(path) else 0o644
        if os.stat(path).st_mode & 0o777 != want:
          wrong[path] = oct(os.stat(path).st_mode & 0o777)
  assert os.listdir(tmp_path / "results") and os.listdir(tmp_path / "cache")
  assert not wrong, wrong


def test_damaged_shard_on_resume_is_recomputed(
    tmp_path, small_probe, concepts_file, log_lines, monkeypatch):
  """A run killed after two activation shards, one of which is then
  truncated: the resumed run logs the shard's path, recomputes it and ends
  with the labels of an uninterrupted run."""
  from jax_dissect.store import cache as cache_lib  # pylint: disable=g-import-not-at-top
  config = pipeline_config.config(tmp_path, d_probe=f"folder:{small_probe}",
                   concept_set=str(concepts_file), shard_images=8,
                   target_layers="layer4")
  whole = pipeline.describe_neurons(pipeline_config.config(
      tmp_path, d_probe=f"folder:{small_probe}",
      concept_set=str(concepts_file), shard_images=8, target_layers="layer4",
      activation_dir=str(tmp_path / "other_cache"),
      result_dir=str(tmp_path / "whole")))

  class Killed(Exception):
    pass

  save = cache_lib.ShardedWriter.save

  def killed_at_third_shard(self, shard, rows):
    if self.key.startswith("activations/") and shard == 2:
      raise Killed
    save(self, shard, rows)

  monkeypatch.setattr(cache_lib.ShardedWriter, "save", killed_at_third_shard)
  with pytest.raises(Killed):
    pipeline.describe_neurons(config)
  monkeypatch.setattr(cache_lib.ShardedWriter, "save", save)
  parts = sorted(glob.glob(str(tmp_path / "cache" / "activations" / "*.parts"
                               / "000001.npy")))
  assert len(parts) == 1
  with open(parts[0], "r+b") as f:
    f.truncate(os.path.getsize(parts[0]) - 40)
  log_lines.clear()
  resumed = pipeline.describe_neurons(config)
  assert any(parts[0] in l and "damaged shard" in l for l in log_lines), (
      log_lines)
  assert resumed.neurons == whole.neurons
