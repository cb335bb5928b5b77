r"""ResNet-18 trained on CIFAR-100, dissected on the CIFAR-100 test set.

Needs downloads only (no manual data): TFDS cifar100 and the hub weights
of the registry's resnet18_cifar100 entry.

  jax-dissect describe --config=resnet18_cifar100

Expected: results/resnet18_cifar100/descriptions.csv with 1024 rows; with
the CIFAR-100 class names as concepts the fc neurons mostly get their class.

Offline smoke variant (random CIFAR ResNet-18, small random CLIP, the 1000
ImageNet-sample photos, the Broden label concept set; under a minute on a
2-core CPU):

  jax-dissect describe --config=resnet18_cifar100:smoke

Expected: results/resnet18_cifar100_smoke/descriptions.csv with 1024 rows
(conv1, layer1..layer4 of ResNet-18), labels from broden_labels_clean.txt,
finite scores; a second run takes every array from the cache.
"""

from jax_dissect.configs import common


def get_config(arg=None):
  config = common.base()
  config.target_model = "resnet18_cifar100"
  config.target_layers = "conv1,layer1,layer2,layer3,layer4"
  config.clip_model = "openai/clip-vit-base-patch16"
  config.d_probe = "cifar100_val"
  config.concept_set = common.concepts("20k.txt")
  config.batch_size = 200
  config.result_dir = "results/resnet18_cifar100"
  if arg == "smoke":
    config = common.make_smoke(config, "resnet18_cifar100")
    config.concept_set = common.concepts("broden_labels_clean.txt")
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; allowed: smoke")
  return config
