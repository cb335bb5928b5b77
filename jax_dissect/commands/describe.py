"""`jax-dissect describe` / scripts/describe_neurons.py: label every neuron.

  python scripts/describe_neurons.py --config=configs/resnet50_imagenet.py \
      --config.similarity_fn=wpmi --result_dir=results/rn50

Flags with the reference CLI's names override the config; without --config
the defaults are the reference's (resnet50, ViT-B/16 CLIP, soft_wpmi...).
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jax_dissect import commands
from jax_dissect import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "An ml_collections config file (configs/*.py[:arg]).")
flags.FLAGS.register_flag_by_module(commands.flag_module(),
                                    flags.FLAGS["config"])

_DEFAULTS = pipeline.default_config()
# The reference CLI's flags; each overrides the config value when given.
_STR_FLAGS = {
    "clip_model": "CLIP model: hub id, local directory, or 'random'.",
    "target_model": "Target model: registry name (resnet50, vit_b16, "
                    "clip_vision, ...) or package.module:factory.",
    "target_layers": "Comma-separated layer paths to dissect.",
    "d_probe": "Probe data set (folder:<dir>, tfds:<name>:<split>, an alias "
               "such as imagenet_val or cifar100_val, or a+b).",
    "concept_set": "Concept set file, one concept per line.",
    "pool_mode": "Spatial pooling of conv maps: avg or max.",
    "token_pool": "Pooling of (B, T, C) token maps (ViTs): cls or mean.",
    "similarity_fn": "soft_wpmi, wpmi, rank_reorder, cos_similarity or "
                     "cos_similarity_cubed.",
    "result_dir": "Directory the results are written to.",
    "activation_dir": "Cache directory of embeddings and activations.",
    "target_weights": "Target weights: hub id, .safetensors/.pth file, orbax "
                      "directory or 'random' (default: the model's own).",
    "concept_activations": "A precomputed P (N images x M concepts) .npy to "
                           "use instead of CLIP.",
    "sharding": "Neuron sharding of the kernel: auto, none, shard_map, pmap.",
}
for _name, _help in _STR_FLAGS.items():
  flags.DEFINE_string(_name, None, f"{_help} Default: {_DEFAULTS[_name]!r}.",
    module_name=commands.flag_module())
flags.DEFINE_integer("batch_size", None,
                     f"Images per batch. Default: {_DEFAULTS.batch_size}.",
    module_name=commands.flag_module())
flags.DEFINE_bool("strict", None, "Fail on unreadable probe images instead "
                  "of skipping them. Default: False.",
    module_name=commands.flag_module())
flags.DEFINE_bool("score_labels", None, "After labelling, score every label "
                  "(analysis/explanation_scores.csv: simulation scores, "
                  "p- and q-values). Default: False.",
    module_name=commands.flag_module())
FLAGS = flags.FLAGS


def config_from_flags():
  """The run's config: defaults, then --config, then the reference flags."""
  config = pipeline.default_config()
  if _CONFIG.value is not None:
    config.update(_CONFIG.value.to_dict())
  for name in list(_STR_FLAGS) + ["batch_size", "strict", "score_labels"]:
    if FLAGS[name].present:
      config[name] = FLAGS[name].value
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  commands.setup_environment()
  config = config_from_flags()
  try:
    results = pipeline.describe_neurons(config)
  except (*commands.USER_ERRORS, RuntimeError) as e:
    # Bad input (unknown names, missing files, unloadable weights): one line.
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  logging.info("timings (s): %s", results.config["timings_s"])


def run(argv=None):
  app.run(main, argv=argv)
