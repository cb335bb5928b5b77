"""Describe-and-Dissect's settings, with the original's defaults."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jax_dissect import similarity
from jax_dissect.runtime import options

SELECTIONS = ("generation", "clip_dissect")


@dataclasses.dataclass(frozen=True)
class DnDConfig:
  """Settings of a Describe-and-Dissect run (defaults: the original's).

  Attributes:
    num_images: most activating probe images per neuron (stage 1), and how
      many of images + crops go on to captioning.
    num_crops: most crops cut from one image (conv layers only).
    image_size: side of the square every probe image is resized to (the
      aspect ratio is not kept, as in the original).
    max_crop_overlap: largest IoU between two crops of one image.
    max_full_image_iou: a crop must have a smaller IoU with its image.
    num_candidates: language-model summaries per neuron (on shuffled
      captions); duplicates are dropped afterwards.
    num_generated: images generated per candidate concept.
    beta: best ranks of a candidate's generated images that its score
      averages (squared).
    clip_top_k: a candidate's generated images among the `clip_top_k` most
      activating of all generated images are compared with the neuron's
      top images in CLIP space.
    prompt_template: text-to-image prompt, one "{}" for the candidate.
    generated_image_size: resize generated images to this square size
      before the target and CLIP see them (the original's 32; None keeps
      the generator's size).
    selection: "generation" (the original's: rank generated images) or
      "clip_dissect" (score candidates on the probe set with a CLIP-Dissect
      similarity function; no generator needed).
    similarity_fn: kernel of the "clip_dissect" selection.
    similarity_kwargs: its hyper-parameters (top_k is lowered to the number
      of probe images if larger).
    num_labels: labels returned per neuron (description, label_2, ...).
    seed: seed of the caption shuffles and of the generator.
    unit_chunk: neurons whose crops/captions/candidates are computed
      together before their entries are saved (bounds what a kill loses).
  """
  num_images: int = 10
  num_crops: int = 4
  image_size: int = 375
  max_crop_overlap: float = 0.5
  max_full_image_iou: float = 0.8
  num_candidates: int = 5
  num_generated: int = 10
  beta: int = 5
  clip_top_k: int = 10
  prompt_template: str = "One realistic image of {}"
  generated_image_size: int | None = 32
  selection: str = "generation"
  similarity_fn: str = "soft_wpmi"
  similarity_kwargs: Mapping[str, Any] = dataclasses.field(
      default_factory=dict)
  num_labels: int = 3
  seed: int = 0
  unit_chunk: int = 64

  def __post_init__(self):
    positive = ("num_images", "image_size", "num_candidates",
                "num_generated", "beta", "clip_top_k", "num_labels",
                "unit_chunk")
    for name in positive:
      options.integer(name, getattr(self, name), minimum=1)
    options.integer("num_crops", self.num_crops, minimum=0)
    options.integer("seed", self.seed)
    for name in ("max_crop_overlap", "max_full_image_iou"):
      options.real(name, getattr(self, name), 0.0, 1.0)
    if (not isinstance(self.prompt_template, str)
        or self.prompt_template.count("{}") != 1):
      raise ValueError(f"prompt_template={self.prompt_template!r} must hold "
                       "exactly one '{}'")
    if self.generated_image_size is not None:
      options.integer("generated_image_size", self.generated_image_size,
                      minimum=1)
    options.choice("selection", self.selection, SELECTIONS)
    options.choice("similarity_fn", self.similarity_fn, similarity.names())

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["similarity_kwargs"] = dict(self.similarity_kwargs)
    return out
