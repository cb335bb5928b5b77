"""Probe sets: image folders, unions, TFDS, unreadable images, names."""

import os
import time

import numpy as np
from PIL import Image
import pytest

from configs import shared_data
from jax_dissect.data import probes as data_lib

SHARED = shared_data.root()
SAMPLE = os.path.join(SHARED, "imagenet_sample")


def _write_images(root, names, size=(12, 9)):
  rng = np.random.default_rng(0)
  for name in names:
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = rng.integers(0, 255, size=size + (3,), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def test_image_folder_sorted_recursive(tmp_path):
  _write_images(str(tmp_path), ["b.png", "a/z.jpg", "a/c.PNG", "d.bmp"])
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / ".hidden.png").write_bytes(b"")
  folder = data_lib.ImageFolder(str(tmp_path))
  assert folder.ids == ["a/c.PNG", "a/z.jpg", "b.png", "d.bmp"]
  img = folder.load(1)
  assert img.mode == "RGB" and img.size == (9, 12)


def test_shared_sample_folder():
  folder = data_lib.make_probe_set(f"folder:{SAMPLE}")
  assert len(folder) == 1000
  assert folder.ids[0] == "n01440764_tench.jpg"
  assert folder.ids == sorted(folder.ids)


def test_fingerprint_changes_with_content_and_order(tmp_path):
  _write_images(str(tmp_path), ["a.png", "b.png"])
  fp = data_lib.ImageFolder(str(tmp_path)).fingerprint()
  assert fp == data_lib.ImageFolder(str(tmp_path)).fingerprint()
  time.sleep(0.01)
  _write_images(str(tmp_path / "x"), ["a.png"], size=(5, 5))
  os.replace(tmp_path / "x" / "a.png", tmp_path / "a.png")
  assert data_lib.ImageFolder(str(tmp_path)).fingerprint() != fp
  hashed = data_lib.ImageFolder(str(tmp_path), fingerprint="content")
  assert hashed.fingerprint() != fp


def test_file_digests_are_kept_and_redone_on_any_rewrite(tmp_path):
  """Digests are computed once and reused from the cache; a file rewritten
  in place with the same size and mtime is hashed again (its ctime moved)."""
  from jax_dissect.store import cache as cache_lib  # pylint: disable=g-import-not-at-top
  names = [f"{i:02d}.png" for i in range(12)]
  _write_images(str(tmp_path / "img"), names)
  cache = cache_lib.ArrayCache(str(tmp_path / "cache"))

  def folder():
    return data_lib.ImageFolder(str(tmp_path / "img"), fingerprint="content",
                                digests=data_lib.FileDigests(cache, 4))

  first = folder()
  fp = first.fingerprint()
  assert first.digests.hashed == 12
  again = folder()
  assert again.fingerprint() == fp and again.digests.hashed == 0
  path = tmp_path / "img" / "03.png"
  st = os.stat(path)
  data = bytearray(path.read_bytes())
  data[-20] ^= 0xFF  # Same size.
  path.write_bytes(bytes(data))
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # Same mtime.
  changed = folder()
  assert changed.fingerprint() != fp and changed.digests.hashed == 1
  assert data_lib.ImageFolder(str(tmp_path / "img")).fingerprint() == (
      data_lib.ImageFolder(str(tmp_path / "img")).fingerprint())
  with pytest.raises(ValueError, match="probe_fingerprint='md5'"):
    data_lib.ImageFolder(str(tmp_path / "img"), fingerprint="md5")


def test_empty_and_missing_folder(tmp_path):
  with pytest.raises(ValueError, match="holds no images"):
    data_lib.ImageFolder(str(tmp_path))
  with pytest.raises(ValueError, match="does not exist"):
    data_lib.ImageFolder(str(tmp_path / "nope"))


def test_scan_finds_unreadable_images(tmp_path):
  _write_images(str(tmp_path), ["a.png", "c.png"])
  (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
  folder = data_lib.ImageFolder(str(tmp_path))
  result = data_lib.scan(folder)
  assert result.readable == (0, 2)
  assert result.skipped[0][0] == "b.jpg" and "b.jpg" in result.skipped[0][1]
  subset = data_lib.Subset(folder, result.readable)
  assert subset.ids == ["a.png", "c.png"]
  assert subset.load(1).size == folder.load(2).size


@pytest.mark.parametrize("fingerprint", ["stat", "content"])
def test_a_looped_file_symlink_is_skipped_like_an_unreadable_image(
    tmp_path, fingerprint):
  """Issue 25: a looped file symlink in the probe folder ended the run
  (ELOOP while fingerprinting), while other unreadable files are skipped."""
  _write_images(str(tmp_path), ["a.png", "c.png"])
  os.symlink("b.jpg", tmp_path / "b.jpg")  # Points at itself.
  folder = data_lib.ImageFolder(str(tmp_path), fingerprint=fingerprint)
  assert folder.ids == ["a.png", "b.jpg", "c.png"]
  assert folder.fingerprint()
  result = data_lib.scan(folder)
  assert result.readable == (0, 2)
  assert result.skipped[0][0] == "b.jpg"
  assert "symbolic links" in result.skipped[0][1]


def test_a_folder_symlink_loop_is_walked_once(tmp_path):
  """A link to a folder above it made the walk read every image again
  at each of 40 levels of the loop."""
  _write_images(str(tmp_path / "x"), ["a.png", "sub/b.png"])
  os.symlink(str(tmp_path / "x"), tmp_path / "x" / "sub" / "loop")
  folder = data_lib.ImageFolder(str(tmp_path / "x"))
  assert folder.ids == ["a.png", "sub/b.png"]


def test_an_unknown_tfds_name_is_one_short_line(tmp_path):
  """Issue 25: TFDS's error lists every data set it knows (kilobytes)."""
  with pytest.raises(ValueError) as e:
    data_lib.make_probe_set("tfds:no_such_dataset_xyz:test",
                            tfds_data_dir=str(tmp_path), tfds_download=False)
  message = str(e.value)
  assert "no_such_dataset_xyz" in message
  assert "\n" not in message and len(message) <= 300, len(message)


def test_union_concatenates_and_disambiguates(tmp_path):
  _write_images(str(tmp_path / "x"), ["a.png", "b.png"])
  _write_images(str(tmp_path / "y"), ["a.png"])
  union = data_lib.make_probe_set(
      f"folder:{tmp_path / 'x'}+folder:{tmp_path / 'y'}")
  assert len(union) == 3
  assert union.ids == ["0:a.png", "0:b.png", "1:a.png"]
  assert union.load(2).size == (9, 12)
  other = data_lib.make_probe_set(
      f"folder:{tmp_path / 'y'}+folder:{tmp_path / 'x'}")
  assert other.fingerprint() != union.fingerprint()


def test_unknown_probe_names():
  with pytest.raises(ValueError, match="unknown probe data set 'imgnet'.*"
                     "imagenet_val"):
    data_lib.make_probe_set("imgnet")
  with pytest.raises(ValueError, match="needs --broden_dir"):
    data_lib.make_probe_set("broden")
  with pytest.raises(ValueError, match="expected tfds:<name>:<split>"):
    data_lib.make_probe_set("tfds:cifar100")


def test_tfds_unavailable_gives_clear_error(tmp_path):
  with pytest.raises(ValueError, match="cannot open TFDS data set 'cifar100'"
                     ".*not prepared"):
    data_lib.make_probe_set("cifar100_val", tfds_data_dir=str(tmp_path),
                            tfds_download=False)


def _tiny_tfds_builder(image_dir):
  """Registers a 5-image TFDS builder (array_record, no TensorFlow)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class TinyProbe(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=(
          tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(None, None, 3)),
              "label": tfds.features.ClassLabel(num_classes=3)})))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"test": self._generate_examples()}

    def _generate_examples(self):
      for i in range(5):  # Encoded files: tfds encodes them without TF.
        yield i, {"image": os.path.join(image_dir, f"{i}.png"),
                  "label": i % 3}
  return TinyProbe


def test_tfds_probe_set_reads_array_record(tmp_path):
  _write_images(str(tmp_path / "src"), [f"{i}.png" for i in range(5)])
  builder_cls = _tiny_tfds_builder(str(tmp_path / "src"))
  builder_cls(data_dir=str(tmp_path / "tfds"),
              file_format="array_record").download_and_prepare()
  probe = data_lib.make_probe_set("tfds:tiny_probe:test",
                                  tfds_data_dir=str(tmp_path / "tfds"),
                                  tfds_download=False)
  assert probe.ids == [f"tiny_probe/test/{i}" for i in range(5)]
  # TFDS stores examples in its own (hashed key) order: compare as sets.
  got = sorted(np.asarray(probe.load(i)).tobytes() for i in range(5))
  want = sorted(np.asarray(Image.open(tmp_path / "src" / f"{i}.png"))
                .tobytes() for i in range(5))
  assert got == want
  assert probe.load(0).mode == "RGB"
  assert probe.fingerprint() == data_lib.make_probe_set(
      "tfds:tiny_probe:test", tfds_data_dir=str(tmp_path / "tfds")
      ).fingerprint()


def test_broden_probe_set_is_its_photos_not_its_masks(tmp_path):
  """Broden's images/ holds segmentation masks (.png) beside the photos
  (.jpg); the original program deletes the .png files, so the probe set is
  the .jpg files only. A plain folder keeps every image."""
  images = tmp_path / "broden1_224" / "images"
  for sub, names in (("ade20k", ["a.jpg", "a_color.png", "a_object.png"]),
                     ("dtd", ["b.jpg"]), ("pascal", ["c.jpg", "c_part_1.png"])):
    (images / sub).mkdir(parents=True)
    for name in names:
      Image.new("RGB", (8, 8)).save(images / sub / name)
  broden = data_lib.make_probe_set("broden", broden_dir=str(images))
  assert broden.ids == ["ade20k/a.jpg", "dtd/b.jpg", "pascal/c.jpg"]
  folder = data_lib.make_probe_set(f"folder:{images}")
  assert len(folder.ids) == 6
