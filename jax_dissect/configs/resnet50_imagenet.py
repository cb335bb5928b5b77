r"""ResNet-50 (ImageNet) dissected with ViT-B/16 CLIP: the paper's setting.

Paper setting (needs the hub weights timm/resnet50.tv_in1k and
openai/clip-vit-base-patch16, ImageNet val prepared for TFDS with a manual
dir, and Broden images):

  jax-dissect describe --config=resnet50_imagenet \
      --config.tfds_manual_dir=/data/imagenet --config.broden_dir=/data/broden

Expected: results/resnet50_imagenet/descriptions.csv with 3904 rows (64 +
256 + 512 + 1024 + 2048 neurons of conv1, layer1..layer4). For the fc layer
with the ImageNet class names as concept set, the paper's Table 3 reports
soft_wpmi top-1 95.40% with this probe set (ImageNet val + Broden) and
95.00% with ImageNet val alone (`jax-dissect reproduce --table=table3`).

Offline smoke variant (random ResNet-50 and a small random CLIP, the first
400 photos of ../shared/data/imagenet_sample, the 3k concept set; about a
minute on a 2-core CPU):

  jax-dissect describe --config=resnet50_imagenet:smoke

Expected: results/resnet50_imagenet_smoke/descriptions.csv with 3904 rows,
labels from 3k.txt, finite scores (random models: the labels mean nothing).
"""

from jax_dissect.configs import common


def get_config(arg=None):
  config = common.base()
  config.target_model = "resnet50"
  config.target_layers = "conv1,layer1,layer2,layer3,layer4"
  config.clip_model = "openai/clip-vit-base-patch16"
  config.d_probe = "imagenet_broden"
  config.concept_set = common.concepts("20k.txt")
  config.similarity_fn = "soft_wpmi"
  config.result_dir = "results/resnet50_imagenet"
  if arg == "smoke":
    config = common.make_smoke(config, "resnet50_imagenet")
    config.concept_set = common.concepts("3k.txt")
    config.max_images = 400  # ResNet-50 at 224 px runs ~10 images/s here.
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; allowed: smoke")
  return config
