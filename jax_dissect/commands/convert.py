"""`jax-dissect convert` / scripts/convert_torchvision.py: torchvision ResNet
weights to a Flax orbax checkpoint.

  python scripts/convert_torchvision.py --model=resnet50 \
      --weights=timm/resnet50.tv_in1k --output=checkpoints/resnet50
  python scripts/convert_torchvision.py --model=resnet18 \
      --weights=resnet18-f37072fd.pth --output=checkpoints/resnet18

--weights is a local .safetensors/.pth/.pt file or a Hugging Face hub repo id
(default: the model's registry default). The checkpoint directory can then be
passed as the weights of `get_model(name).load(weights=...)`.
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging

from jax_dissect import models
from jax_dissect.commands import common
from jax_dissect.models import convert

# Models with their own loader (Hugging Face ViT, CLIP) are not torchvision
# ports: they load their weights directly.
_MODEL = flags.DEFINE_enum(
    "model", None, [m for m in models.list_models()
                    if models.get_model(m).loader is None],
    "Registry name of the target model.",
    module_name=common.flag_module())
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "Local .safetensors/.pth/.pt file or hub repo id "
    "(default: the registry's default weights).",
    module_name=common.flag_module())
_OUTPUT = flags.DEFINE_string("output", None,
                              "Orbax checkpoint directory to write.",
    module_name=common.flag_module())
_FORCE = flags.DEFINE_bool("force", False, "Overwrite --output if it exists.",
    module_name=common.flag_module())
flags.mark_flags_as_required(["model", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_environment()
  spec = models.get_model(_MODEL.value)
  _, variables = spec.load(weights=_WEIGHTS.value)
  path = convert.save_variables(_OUTPUT.value, variables, force=_FORCE.value)
  logging.info("wrote %s (weights fingerprint %s)", path,
               models.weights_fingerprint(variables))


def run(argv=None):
  app.run(common.one_line_errors(main), argv=argv)
