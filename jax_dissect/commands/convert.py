"""`jax-dissect convert` / scripts/convert_torchvision.py: torchvision ResNet
weights to a Flax orbax checkpoint.

  jax-dissect convert --model=resnet50 --weights=timm/resnet50.tv_in1k \\
      --output=checkpoints/resnet50
  jax-dissect convert --model=resnet18 --weights=resnet18-f37072fd.pth \\
      --output=checkpoints/resnet18

--weights is a local .safetensors/.pth/.pt file or a Hugging Face hub repo id
(default: the model's registry default). The checkpoint directory can then be
passed as the weights of `get_model(name).load(weights=...)` or as
describe's --target_weights.
"""

from __future__ import annotations

from absl import flags

from jax_dissect.commands import common
from jax_dissect.commands import console

FLAGS = flags.FLAGS


@common.define_once
def define_flags() -> None:
  """Declares the command's flags (once)."""
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  kw = {"module_name": common.FLAG_MODULE}
  # Models with their own loader (Hugging Face ViT, CLIP) are not
  # torchvision ports: they load their weights directly.
  flags.DEFINE_enum("model", None, [
      m for m in models.list_models() if models.get_model(m).loader is None],
                    "Registry name of the target model (required).", **kw)
  flags.DEFINE_string("weights", None, "Local .safetensors/.pth/.pt file or "
                      "hub repo id (default: the registry's default "
                      "weights).", **kw)
  flags.DEFINE_string("output", None, "Orbax checkpoint directory to write "
                      "(required).", **kw)
  flags.DEFINE_bool("force", False, "Overwrite --output if it exists.", **kw)


def help_notes() -> list[str]:
  return []


def main(argv) -> None:
  del argv
  for name in ("model", "output"):
    if FLAGS[name].value is None:
      raise console.UsageError(f"--{name} is required (see --help)")
  common.setup_environment()
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  from jax_dissect.models import convert  # pylint: disable=g-import-not-at-top
  spec = models.get_model(FLAGS.model)
  common.prepare_hub([FLAGS.weights or spec.default_weights])
  _, variables = spec.load(weights=FLAGS.weights)
  path = convert.save_variables(FLAGS.output, variables, force=FLAGS.force)
  print(f"wrote {path} (weights fingerprint "
        f"{models.weights_fingerprint(variables)})")


def run(argv: list[str] | None = None) -> None:
  """Parses the flags and runs; exits with the command's status."""
  common.run_command(define_flags, main, argv)
