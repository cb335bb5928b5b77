"""Where the report's images come from, and the thumbnails a run saves.

A run's top images are ids of its probe set (image_ids.txt). The report
finds their pixels, in this order: a loader the caller gives; files under
`image_root`; the thumbnails the run saved (`thumbnails/`, written by
`jax-dissect describe` for probe sets whose images are not files, such as
TFDS data sets); the run's own probe set, rebuilt from its config.json
(an image folder is read directly); else the ids as file paths.
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import io
import json
import os

from absl import logging
from PIL import Image

from jax_dissect.data import probes
from jax_dissect.runtime import progress as progress_lib
from jax_dissect.store import files
from jax_dissect.store import results as results_lib

ImageLoader = Callable[[str], "Image.Image | None"]

THUMBNAILS_DIR = "thumbnails"
INDEX_JSON = "index.json"
# What describe saves: the top images of each neuron, at most this size.
SAVED_PER_NEURON = 5
SAVED_SIZE = 160


def open_image(path: str, size: int | None = None) -> Image.Image | None:
  """An RGB image from a file (JPEGs decoded at reduced size when only a
  `size` thumbnail is needed), or None if it cannot be read."""
  if not os.path.isfile(path):
    return None
  try:
    with Image.open(path) as img:
      if size and img.format == "JPEG":
        img.draft("RGB", (size, size))
      img.load()
      return img.convert("RGB")
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return None


def file_loader(image_root: str | None, size: int | None = None
                ) -> ImageLoader:
  """Images `image_root/<id>` (or the id itself as a path)."""
  def load(image_id: str):
    return open_image(os.path.join(image_root, image_id) if image_root
                      else image_id, size)
  return load


def _file_name(image_id: str) -> str:
  return hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:20] + ".jpg"


def saved_loader(run: results_lib.Run) -> ImageLoader | None:
  """The run's saved thumbnails, or None if it saved none."""
  folder = os.path.join(run.path, THUMBNAILS_DIR)
  try:
    with open(os.path.join(folder, INDEX_JSON), encoding="utf-8") as f:
      index = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None

  def load(image_id: str):
    name = index.get(image_id)
    return open_image(os.path.join(folder, name)) if name else None
  return load


def _probe(run: results_lib.Run) -> probes.ProbeSet:
  """The run's probe set (ValueError if it cannot be rebuilt here)."""
  return probes.run_probe_set(run)


def _is_files(probe: probes.ProbeSet) -> bool:
  """Whether every image of `probe` is a file (an image folder)."""
  return len(probe) == 0 or all(probe.path(i) is not None
                                for i in (0, len(probe) - 1))


def probe_loader(run: results_lib.Run, size: int | None = None
                 ) -> tuple[ImageLoader | None, str]:
  """(a loader of the run's probe images, "") or (None, why not)."""
  try:
    probe = _probe(run)
  except (ValueError, OSError, ImportError) as e:
    return None, " ".join(str(e).split())
  where = {image_id: i for i, image_id in enumerate(probe.ids)}

  def load(image_id: str):
    i = where.get(image_id)
    if i is None:
      return None
    path = probe.path(i)
    if path is not None:
      return open_image(path, size)
    try:
      return probe.load(i).convert("RGB")
    except Exception:  # pylint: disable=broad-except
      return None
  return load, ""


def report_loader(run: results_lib.Run, image_root: str | None = None,
                  size: int | None = None) -> ImageLoader:
  """The report's images of `run` (the order of the module docstring)."""
  if image_root:
    return file_loader(image_root, size)
  chain: list[ImageLoader] = []
  saved = saved_loader(run)
  if saved is not None:
    chain.append(saved)
  probe, why = probe_loader(run, size)
  if probe is not None:
    chain.append(probe)
  elif saved is None and run.config.get("d_probe"):
    logging.warning("report: the run's probe images cannot be read here "
                    "(%s); pass --image_root", why)
  chain.append(file_loader(None, size))

  def load(image_id: str):
    for loader in chain:
      image = loader(image_id)
      if image is not None:
        return image
    return None
  return load


def save_thumbnails(run: results_lib.Run,
                    per_neuron: int = SAVED_PER_NEURON,
                    size: int = SAVED_SIZE) -> str | None:
  """Saves small copies of the neurons' top images into the run, for a
  probe set whose images are not files (TFDS): the report then shows them
  without the data set. Nothing is saved for image folders.

  Args:
    run: the run (written by describe_neurons).
    per_neuron: top images saved per neuron.
    size: largest side of a saved thumbnail, in pixels.

  Returns:
    The thumbnails directory, or None if nothing was saved.
  """
  try:
    probe = _probe(run)
  except (ValueError, OSError, ImportError) as e:
    logging.warning("no thumbnails saved: %s", " ".join(str(e).split()))
    return None
  if _is_files(probe):
    return None
  where = {image_id: i for i, image_id in enumerate(probe.ids)}
  wanted = list(dict.fromkeys(i for n in run.neurons
                              for i in n.top_images[:per_neuron]))
  folder = os.path.join(run.path, THUMBNAILS_DIR)
  os.makedirs(folder, exist_ok=True)
  index: dict[str, str] = {}
  progress = progress_lib.Progress("thumbnails", len(wanted))
  for image_id in wanted:
    name = _file_name(image_id)
    path = os.path.join(folder, name)
    if not os.path.exists(path) and image_id in where:
      try:
        image = probe.load(where[image_id]).convert("RGB")
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("thumbnail of %r not saved: %s", image_id, e)
        progress.update(1)
        continue
      image.thumbnail((size, size))
      buf = io.BytesIO()
      image.save(buf, format="JPEG", quality=85)
      files.write_bytes(path, buf.getvalue())
    if os.path.exists(path):
      index[image_id] = name
    progress.update(1)
  progress.update(0, final=True)
  files.write_json(os.path.join(folder, INDEX_JSON), index, indent=0)
  return folder
