r"""ResNet-18 trained on Places365, dissected with ViT-B/16 CLIP.

Paper setting (Places365 ResNet-18 weights converted to torchvision names, a
local .pth/.safetensors file; Places365 val prepared for TFDS):

  jax-dissect describe --config=resnet18_places365 \
      --target_weights=/data/resnet18_places365.pth.tar

Expected: results/resnet18_places365/descriptions.csv with 1024 rows (64 +
64 + 128 + 256 + 512 neurons); scene concepts dominate layer4.

Offline smoke variant (random ResNet-18 with 365 classes, small random CLIP,
the ImageNet-sample photos, the Places365 category names as concepts):

  jax-dissect describe --config=resnet18_places365:smoke

Expected: results/resnet18_places365_smoke/descriptions.csv with 1024 rows,
labels from categories_places365.txt, finite scores.
"""

from jax_dissect.configs import common


def get_config(arg=None):
  config = common.base()
  config.target_model = "resnet18_places365"
  config.target_layers = "conv1,layer1,layer2,layer3,layer4"
  config.clip_model = "openai/clip-vit-base-patch16"
  config.d_probe = "places365_val"
  config.concept_set = common.concepts("20k.txt")
  config.result_dir = "results/resnet18_places365"
  if arg == "smoke":
    config = common.make_smoke(config, "resnet18_places365")
    config.concept_set = common.concepts("categories_places365.txt")
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; allowed: smoke")
  return config
