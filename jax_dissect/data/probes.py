"""Probing data sets: deterministic ordered sequences of (image id, image).

A probe set has an identity used for caching (`fingerprint()`), a list of
image ids in probe order (`ids`), and random access to decoded RGB images
(`load(i)`). Image folders are read with PIL (no TensorFlow); TFDS data sets
through `tfds.data_source` (array_record, no TensorFlow needed).

Unreadable images are found once by `scan()` (decoding each image); the
pipeline drops them from every stage, so rows of A and P stay aligned, and
names each skipped file in a warning and in the results.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import hashlib
import os
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
from PIL import Image

from jax_dissect.data import preprocess
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import integrity

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif",
                    ".tiff", ".ppm", ".pgm")
FINGERPRINTS = ("stat", "content")
# The photos of Broden's images/ folder (its masks are .png files).
BRODEN_EXTENSIONS = (".jpg", ".jpeg")


class ProbeSet(abc.ABC):
  """An ordered, random-access set of probe images."""

  @property
  @abc.abstractmethod
  def ids(self) -> list[str]:
    """Image ids in probe order."""

  @abc.abstractmethod
  def load(self, index: int) -> Image.Image:
    """Decodes image `index` as RGB; raises preprocess.ImageReadError."""

  @abc.abstractmethod
  def fingerprint(self) -> str:
    """Digest of the set's identity, ordered ids and their contents."""

  def __len__(self) -> int:
    return len(self.ids)

  def path(self, index: int) -> str | None:
    """The file image `index` is read from, or None (e.g. a TFDS record)."""
    del index
    return None

  def describe(self) -> str:
    return f"{type(self).__name__}({len(self)} images)"


class FileDigests:
  """SHA-256 digests of files, kept between runs.

  A file is hashed (in a thread pool) the first time it is seen; its digest
  is stored in the cache (a JSON entry per folder) with the file's size,
  mtime, ctime and inode, and reused while all four stay the same. ctime
  cannot be set back by a user, so a file rewritten in place is hashed
  again even when its size and mtime are kept.
  """

  def __init__(self, cache: cache_lib.ArrayCache | None = None,
               num_threads: int | None = None):
    self.cache = cache
    self.num_threads = num_threads or min(8, 2 * (os.cpu_count() or 1))
    self.hashed = 0  # Files hashed by the last `digests` call.

  def digests(self, root: str, names: Sequence[str]) -> list[str]:
    """Hex SHA-256 of each file `root/name`, in order."""
    key = self.cache.key("file_digests", root=root) if self.cache else None
    known = (self.cache.load_json(key) if self.cache else None) or {}
    stats = {}
    todo = []
    for name in names:
      try:
        st = os.stat(os.path.join(root, name))
        stats[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
      except OSError as e:  # A symlink loop...: skipped by the scan.
        stats[name] = ["unreadable", e.errno, 0, 0]
      if known.get(name, [None])[:-1] != stats[name]:
        todo.append(name)
    if todo:
      logging.info("probe fingerprint: hashing %d of %d files", len(todo),
                   len(names))
      with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
        for name, digest in zip(todo, pool.map(
            lambda n: _sha256(os.path.join(root, n)), todo)):
          known[name] = stats[name] + [digest]
    self.hashed = len(todo)
    if self.cache and (todo or len(known) != len(names)):
      self.cache.save_json(key, {n: known[n] for n in names})
    return [known[n][-1] for n in names]


def _sha256(path: str) -> str:
  """The file's SHA-256, or "unreadable:<errno>" (the scan skips it)."""
  try:
    with open(path, "rb") as f:
      return hashlib.file_digest(f, "sha256").hexdigest()
  except OSError as e:
    return f"unreadable:{e.errno}"


class ImageFolder(ProbeSet):
  """All images under a directory (recursive), in sorted path order.

  Ids are paths relative to the root. The fingerprint covers every file's
  relative path and either its size and modification time
  (fingerprint="stat": free, but blind to a file rewritten with the same
  size and mtime) or the SHA-256 of its bytes (fingerprint="content", with
  `digests` keeping them between runs), so replacing an image changes it.
  """

  def __init__(self, root: str, fingerprint: str = "stat",
               digests: FileDigests | None = None,
               extensions: tuple[str, ...] = IMAGE_EXTENSIONS):
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
      raise ValueError(f"image folder {root!r} does not exist or is not a "
                       "directory")
    if fingerprint not in FINGERPRINTS:
      raise ValueError(f"probe_fingerprint={fingerprint!r} is not valid; "
                       f"allowed: {', '.join(FINGERPRINTS)}")
    paths = []
    seen = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
      # A linked directory seen before (a symlink loop, or a second link
      # to the same folder) is walked once.
      kept = []
      for d in sorted(dirnames):
        real = os.path.realpath(os.path.join(dirpath, d))
        if real in seen:
          logging.warning("probe folder: skipping %s, a link to a folder "
                          "already read (%s)", os.path.join(dirpath, d), real)
          continue
        seen.add(real)
        kept.append(d)
      dirnames[:] = kept
      paths.extend(os.path.join(dirpath, f) for f in filenames
                   if f.lower().endswith(extensions)
                   and not f.startswith("."))
    paths.sort()
    if not paths:
      raise ValueError(f"image folder {root!r} holds no images (looked "
                       f"recursively for {', '.join(extensions)})")
    self.root = root
    self.paths = paths
    self.fingerprint_mode = fingerprint
    self.digests = digests or FileDigests()
    self._ids = [os.path.relpath(p, root) for p in paths]
    self._content_fingerprint = None

  @property
  def ids(self) -> list[str]:
    return self._ids

  def load(self, index: int) -> Image.Image:
    return preprocess.load_rgb(self.paths[index])

  def path(self, index: int) -> str:
    return self.paths[index]

  def fingerprint(self) -> str:
    if self.fingerprint_mode == "content":
      if self._content_fingerprint is None:  # Hashed once per run.
        self._content_fingerprint = integrity.fingerprint(
            "folder", self.root, list(zip(
                self._ids, self.digests.digests(self.root, self._ids))))
      return self._content_fingerprint
    entries = []
    for rel, path in zip(self._ids, self.paths):
      try:
        st = os.stat(path)
        entries.append((rel, st.st_size, st.st_mtime_ns))
      except OSError as e:  # A symlink loop...: skipped by the scan.
        entries.append((rel, "unreadable", e.errno))
    return integrity.fingerprint("folder", self.root, entries)

  def describe(self) -> str:
    return f"image folder {self.root} ({len(self)} images)"


class TfdsProbeSet(ProbeSet):
  """A TFDS split read with tfds.data_source (array_record).

  Ids are `<name>/<split>/<index>`, or the example's `file_name` feature when
  the data set has one (imagenet2012).
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None,
               manual_dir: str | None = None, image_key: str = "image",
               download: bool = True):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.name, self.split, self.image_key = name, split, image_key
    download_config = (tfds.download.DownloadConfig(manual_dir=manual_dir)
                       if manual_dir else None)
    try:
      builder = tfds.builder(name, data_dir=data_dir,
                             file_format="array_record")
      prepared = os.path.exists(os.path.join(builder.data_dir,
                                             "dataset_info.json"))
      if not prepared:
        if not download:
          raise FileNotFoundError(
              f"it is not prepared in {builder.data_dir} and downloading is "
              "off (tfds_download=False)")
        builder.download_and_prepare(download_config=download_config)
      self.source = builder.as_data_source(split=split)
      self.version = str(builder.info.version)
    except Exception as e:  # TFDS raises many types; name the data set.
      raise ValueError(_first_words(ValueError(
          f"cannot open TFDS data set {name!r} split {split!r} "
          f"(data_dir={data_dir!r}): {_first_words(e, 80)}; prepare it "
          "(tfds build; --manual_dir for imagenet2012) or pass "
          "tfds_data_dir"), 300, kind=False)) from e
    n = len(self.source)
    features = builder.info.features
    self._has_file_name = "file_name" in getattr(features, "keys",
                                                 lambda: [])()
    if self._has_file_name:
      self._ids = [_to_str(self.source[i]["file_name"]) for i in range(n)]
    else:
      self._ids = [f"{name}/{split}/{i}" for i in range(n)]

  @property
  def ids(self) -> list[str]:
    return self._ids

  def load(self, index: int) -> Image.Image:
    try:
      image = np.asarray(self.source[index][self.image_key])
    except Exception as e:
      raise preprocess.ImageReadError(
          f"cannot read image {self._ids[index]!r}: {e}") from e
    return preprocess.to_rgb(image)

  def fingerprint(self) -> str:
    return integrity.fingerprint("tfds", self.name, self.split, self.version,
                                 self._ids)

  def describe(self) -> str:
    return f"TFDS {self.name}:{self.split} v{self.version} ({len(self)} images)"


def _first_words(e: BaseException, limit: int = 100, kind: bool = True
                 ) -> str:
  """The start of an error's message on one line, with its type when
  `kind` (TFDS's can list every data set it knows, kilobytes)."""
  text = " ".join((f"{type(e).__name__}: {e}" if kind else str(e)).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _to_str(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


class UnionProbeSet(ProbeSet):
  """The images of several probe sets, one after the other.

  Ids are prefixed with the part's index where two parts share an id.
  """

  def __init__(self, parts: Sequence[ProbeSet]):
    if len(parts) < 2:
      raise ValueError("a union needs at least two probe sets")
    self.parts = list(parts)
    ids, self._index = [], []
    for p_i, part in enumerate(self.parts):
      ids.extend(part.ids)
      self._index.extend((p_i, j) for j in range(len(part)))
    if len(set(ids)) != len(ids):
      ids = [f"{p_i}:{i}" for p_i, part in enumerate(self.parts)
             for i in part.ids]
    self._ids = ids

  @property
  def ids(self) -> list[str]:
    return self._ids

  def load(self, index: int) -> Image.Image:
    p_i, j = self._index[index]
    return self.parts[p_i].load(j)

  def path(self, index: int) -> str | None:
    p_i, j = self._index[index]
    return self.parts[p_i].path(j)

  def fingerprint(self) -> str:
    return integrity.fingerprint("union",
                                 [p.fingerprint() for p in self.parts])

  def describe(self) -> str:
    return " + ".join(p.describe() for p in self.parts)


class Subset(ProbeSet):
  """The images of `base` at `indices` (e.g. without unreadable ones)."""

  def __init__(self, base: ProbeSet, indices: Sequence[int]):
    self.base, self.indices = base, list(indices)
    all_ids = base.ids
    self._ids = [all_ids[i] for i in self.indices]

  @property
  def ids(self) -> list[str]:
    return self._ids

  def load(self, index: int) -> Image.Image:
    return self.base.load(self.indices[index])

  def path(self, index: int) -> str | None:
    return self.base.path(self.indices[index])

  def fingerprint(self) -> str:
    return integrity.fingerprint("subset", self.base.fingerprint(),
                                 self.indices)

  def describe(self) -> str:
    return f"{self.base.describe()} less {len(self.base) - len(self)} skipped"


@dataclasses.dataclass(frozen=True)
class ScanResult:
  """Which images of a probe set decode.

  Attributes:
    readable: indices of the images that decode, in order.
    skipped: (id, error message) of the images that do not.
  """
  readable: tuple[int, ...]
  skipped: tuple[tuple[str, str], ...]


def scan(probe: ProbeSet, log_every: int = 1000) -> ScanResult:
  """Decodes every image once to find the unreadable ones."""
  readable, skipped = [], []
  for i, image_id in enumerate(probe.ids):
    try:
      probe.load(i)
      readable.append(i)
    except preprocess.ImageReadError as e:
      skipped.append((image_id, str(e)))
    if log_every and (i + 1) % log_every == 0:
      logging.info("scanned %d/%d probe images", i + 1, len(probe))
  return ScanResult(tuple(readable), tuple(skipped))


# ----------------------------------------------------------------------------
# Names on the command line.
# ----------------------------------------------------------------------------

# The reference CLI's data set names, as TFDS (name, split).
TFDS_ALIASES = {
    "imagenet_val": ("imagenet2012", "validation"),
    "cifar100_val": ("cifar100", "test"),
    "cifar100_train": ("cifar100", "train"),
    "places365_val": ("places365_small", "validation"),
    "imagenet_v2": ("imagenet_v2", "test"),
}


def make_probe_set(spec: str, *, tfds_data_dir: str | None = None,
                   tfds_manual_dir: str | None = None,
                   tfds_download: bool = True,
                   broden_dir: str | None = None,
                   fingerprint: str = "stat",
                   digests: FileDigests | None = None) -> ProbeSet:
  """Builds a probe set from its command-line name.

  Args:
    spec: one of
      - `folder:<dir>` or an existing directory: an ImageFolder;
      - `tfds:<name>:<split>` (e.g. `tfds:cifar100:test`);
      - a reference alias: imagenet_val, cifar100_val, cifar100_train,
        places365_val, imagenet_v2 (TFDS), broden (folder `broden_dir`),
        imagenet_broden (imagenet_val + broden);
      - `<spec>+<spec>`: the union of the parts, in order.
    tfds_data_dir: TFDS data_dir.
    tfds_manual_dir: TFDS manual_dir (imagenet2012's tar files).
    tfds_download: download and prepare a TFDS data set that is missing.
    broden_dir: folder of Broden images, for `broden`.
    fingerprint: identity of image folders, "stat" or "content" (see
      ImageFolder); TFDS sets are identified by name, split, version and ids.
    digests: where image folders keep their files' digests ("content").

  Returns:
    The probe set.
  """
  kw = dict(tfds_data_dir=tfds_data_dir, tfds_manual_dir=tfds_manual_dir,
            tfds_download=tfds_download, broden_dir=broden_dir,
            fingerprint=fingerprint, digests=digests)
  folder_kw = dict(fingerprint=fingerprint, digests=digests)
  tfds_kw = dict(data_dir=tfds_data_dir, manual_dir=tfds_manual_dir,
                 download=tfds_download)
  spec = spec.strip()
  if "+" in spec:
    return UnionProbeSet([make_probe_set(s, **kw) for s in spec.split("+")])
  if spec == "imagenet_broden":
    return make_probe_set("imagenet_val+broden", **kw)
  if spec == "broden":
    if not broden_dir:
      raise ValueError("d_probe 'broden' needs --broden_dir (a folder of "
                       "Broden images)")
    # Broden keeps segmentation masks as .png beside its .jpg photos; the
    # original CLIP-Dissect deletes every .png (dlbroden.sh), so its probe
    # set is the .jpg files.
    return ImageFolder(broden_dir, extensions=BRODEN_EXTENSIONS, **folder_kw)
  if spec.startswith("folder:"):
    return ImageFolder(spec[len("folder:"):], **folder_kw)
  if spec.startswith("tfds:"):
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts[1:]):
      raise ValueError(f"d_probe {spec!r}: expected tfds:<name>:<split>")
    return TfdsProbeSet(parts[1], parts[2], **tfds_kw)
  if spec in TFDS_ALIASES:
    name, split = TFDS_ALIASES[spec]
    return TfdsProbeSet(name, split, **tfds_kw)
  if os.path.isdir(os.path.expanduser(spec)):
    return ImageFolder(spec, **folder_kw)
  valid = sorted(TFDS_ALIASES) + ["broden", "imagenet_broden",
                                  "folder:<dir>", "tfds:<name>:<split>",
                                  "<spec>+<spec>", "<existing directory>"]
  raise ValueError(f"unknown probe data set {spec!r}; valid: "
                   f"{', '.join(valid)}")


def probe_set_from_options(options: Mapping[str, Any], *,
                           tfds_download: bool = True,
                           digests: FileDigests | None = None) -> ProbeSet:
  """The probe set describe_neurons' options name, before unreadable images
  are dropped.

  Args:
    options: a run's options (a dict or ConfigDict): d_probe,
      tfds_data_dir, tfds_manual_dir, broden_dir and max_images (use only
      the first max_images images; 0 or absent: all) and probe_fingerprint
      ("stat" when absent).
    tfds_download: download and prepare a TFDS data set that is missing.
    digests: where image folders keep their files' digests ("content").

  Returns:
    The probe set.
  """
  probe = make_probe_set(
      options["d_probe"], tfds_data_dir=options.get("tfds_data_dir"),
      tfds_manual_dir=options.get("tfds_manual_dir"),
      tfds_download=tfds_download, broden_dir=options.get("broden_dir"),
      fingerprint=options.get("probe_fingerprint") or "stat",
      digests=digests)
  max_images = options.get("max_images") or 0
  if max_images and max_images < len(probe):
    probe = Subset(probe, range(max_images))
  return probe


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split())


def run_probe_set(results: Any) -> ProbeSet:
  """A describe_neurons run's probe set, rows in the run's order.

  Rebuilt from the run's options (d_probe, tfds/broden options,
  max_images; no download), its unreadable images dropped as the run
  dropped them, and its ids checked against the run's image ids, so image
  i is row i of the run's A and P.

  Args:
    results: a results.Run (its config, image_ids, skipped_images, path).

  Returns:
    The probe set.

  Raises:
    ValueError: the probe set cannot be rebuilt or no longer matches.
  """
  cfg = results.config
  if not cfg.get("d_probe"):
    raise ValueError(f"{os.path.join(results.path, 'config.json')} has no "
                     "d_probe: cannot rebuild the run's probe images")
  try:
    probe = probe_set_from_options(cfg, tfds_download=False)
  except (ValueError, OSError) as e:
    raise ValueError(f"cannot rebuild the run's probe set "
                     f"d_probe={cfg['d_probe']!r}: {_one_line(e)}") from e
  skipped = set(results.skipped_images)
  if skipped:
    probe = Subset(probe, [i for i, image_id in enumerate(probe.ids)
                           if image_id not in skipped])
  ids, want = probe.ids, results.image_ids
  if ids != want:
    first = next((i for i, (a, b) in enumerate(zip(ids, want)) if a != b),
                 min(len(ids), len(want)))
    raise ValueError(
        f"the probe set d_probe={cfg['d_probe']!r} rebuilt now has "
        f"{len(ids)} images but the run's image_ids.txt lists {len(want)}, "
        f"differing from row {first}: the probe data changed since the run "
        "(re-run describe_neurons)")
  return probe
