"""Registry of target models: name -> constructor, weights, preprocessing.

    spec = get_model("resnet18")   # or "vit_b16", "clip_vision", ...
    model, variables = spec.load(weights="random")         # offline smoke runs
    model, variables = spec.load(weights="resnet18.pth")   # local file
    model, variables = spec.load()                         # the hub default
    batch = np.stack([spec.transform(load_rgb(p)) for p in paths])
    logits = model.apply(variables, batch)
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from jax_dissect.data import preprocess
from jax_dissect.models import resnet
from jax_dissect.models.spec import ModelSpec
from jax_dissect.runtime import callables


def _from_hf(function: str, *args, **kwargs) -> Any:
  """Calls jax_dissect.models.hf.<function>, importing it (and transformers)
  only when a Hugging Face model is used."""
  from jax_dissect.models import hf  # pylint: disable=g-import-not-at-top
  return getattr(hf, function)(*args, **kwargs)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (
        ModelSpec("resnet18", resnet.ResNet18, "timm/resnet18.tv_in1k",
                  preprocess.TORCHVISION_IMAGENET_EVAL, 1000),
        ModelSpec("resnet50", resnet.ResNet50, "timm/resnet50.tv_in1k",
                  preprocess.TORCHVISION_IMAGENET_EVAL, 1000),
        # The Places365 project's ResNet-18 (resnet18_places365.pth.tar,
        # torchvision names behind a DataParallel "module." prefix): no hub
        # copy with these names is known, so the file must be given.
        ModelSpec("resnet18_places365",
                  functools.partial(resnet.ResNet18, num_classes=365), "",
                  preprocess.TORCHVISION_IMAGENET_EVAL, 365),
        # A CIFAR-100 ResNet-18 (3x3 stride-1 stem, no max pool) whose
        # timm checkpoint uses torchvision's key names.
        ModelSpec("resnet18_cifar100",
                  functools.partial(resnet.ResNet18, num_classes=100,
                                    cifar_stem=True),
                  "edadaltocg/resnet18_cifar100",
                  preprocess.CIFAR100_EVAL, 100, input_size=32),
        # Hugging Face ViT-B/16 (ImageNet-21k, fine-tuned on ImageNet-1k),
        # FlaxViTForImageClassification; layers "vit.encoder.layer.{0..11}",
        # "classifier" (see models/hf.py).
        ModelSpec("vit_b16",
                  functools.partial(_from_hf, "vit_module_random"),
                  "google/vit-base-patch16-224", preprocess.VIT_EVAL, 1000,
                  loader=functools.partial(_from_hf, "load_vit")),
        # CLIP ViT-B/16's image tower (the default clip_model's);
        # "classes" = the 512 embedding dimensions of "visual_projection".
        ModelSpec("clip_vision",
                  functools.partial(_from_hf, "clip_vision_module_random"),
                  "openai/clip-vit-base-patch16", preprocess.CLIP_EVAL, 512,
                  loader=functools.partial(_from_hf, "load_clip_vision")),
    )
}


def list_models() -> list[str]:
  """Names accepted by `get_model`, sorted."""
  return sorted(MODELS)


def get_model(name: str) -> ModelSpec:
  """Returns the ModelSpec named `name`.

  Raises:
    ValueError: for an unknown name, listing the valid ones.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid models: {list_models()}")
  return MODELS[name]


def resolve_model(name: str) -> ModelSpec:
  """A registry name, or `package.module:factory` whose factory() returns a
  ModelSpec (a user's own model)."""
  if callables.is_spec(name):
    factory = callables.import_callable(name, "target_model")
    spec = factory()
    if not isinstance(spec, ModelSpec):
      raise ValueError(f"target_model {name!r} returned "
                       f"{type(spec).__name__}, not a jax_dissect.models."
                       "ModelSpec")
    return spec
  return get_model(name)


def run_target_model(run_config: Mapping[str, Any], given: str = "",
                     where: str = "config.json") -> str:
  """The target_model to rebuild a finished run's target with.

  `given` (an option the user passed) wins. Otherwise the run's own, from
  its config.json, which must be a registry name: a `package.module:
  function` there is code, and nothing in a run's files is imported or
  called (a results folder may come from someone else; docs/safety.md).

  Args:
    run_config: the run's config.json.
    given: the analysis' target_model option ("" for the run's).
    where: the run's config.json, for messages.

  Raises:
    ValueError: no target_model, or a code spec from the run's files.
  """
  if given:
    return given
  name = run_config.get("target_model")
  if not name or not isinstance(name, str):
    raise ValueError(f"{where} names no target_model: pass target_model "
                     "(a registry name or package.module:function)")
  if callables.is_spec(name):
    raise ValueError(
        f"{where} names target_model={name!r}, which is code; code from a "
        f"run's files is never run: pass --target_model={name} to run it")
  return name


def load_target(name: str, weights: str | None = None, seed: int = 0
                ) -> tuple[ModelSpec, Any, Any]:
  """Resolves and loads a target model.

  Args:
    name: a registry name or `package.module:factory` (see resolve_model).
    weights: the spec's weights (hub id, file, directory or "random");
      None for its default.
    seed: seed of weights="random".

  Returns:
    (spec, module, variables).
  """
  spec = resolve_model(name)
  module, variables = spec.load(weights, seed=seed)
  return spec, module, variables


def register_model(spec: ModelSpec, overwrite: bool = False) -> None:
  """Adds `spec` to the registry (ValueError if the name is taken)."""
  if spec.name in MODELS and not overwrite:
    raise ValueError(f"model {spec.name!r} is already registered; pass "
                     f"overwrite=True to replace it")
  MODELS[spec.name] = spec
