"""`jax-dissect describe` / scripts/describe_neurons.py: label every neuron.

  python scripts/describe_neurons.py --config=configs/resnet50_imagenet.py \
      --config.similarity_fn=wpmi --result_dir=results/rn50

Flags with the reference CLI's names override the config; without --config
the defaults are the reference's (resnet50, ViT-B/16 CLIP, soft_wpmi...).
`--config.<name>=value` sets any option of the config, nested ones too
(`--config.similarity_kwargs.top_k=50`). A missing config file, an unknown
option or a bad value ends the command with one `error: ...` line.

Several processes (hosts) share a run with JAX's own runtime: start the same
command on every host with --coordinator_address (host:port of process 0),
--num_processes and --process_id, or with --distributed alone where JAX
finds them itself (Cloud TPU pods, SLURM, Open MPI):

  python scripts/describe_neurons.py --config=... --coordinator_address=\
      10.0.0.1:1234 --num_processes=2 --process_id=0      # on host 0
  ... --process_id=1                                       # on host 1

jax.distributed.initialize is called here, never by the library. The
cache directory (--activation_dir) must be on a file system every process
sees; process 0 writes the results.
"""

from __future__ import annotations

import difflib
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jax_dissect import pipeline
from jax_dissect.commands import common
from jax_dissect.commands import launch
from jax_dissect.runtime import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "An ml_collections config file (configs/*.py[:arg]).")
flags.FLAGS.register_flag_by_module(common.flag_module(),
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
    module_name=common.flag_module())
flags.DEFINE_integer("batch_size", None,
                     f"Images (texts) per device per forward call. Default: "
                     f"{_DEFAULTS.batch_size}.",
    module_name=common.flag_module())
flags.DEFINE_bool("strict", None, "Fail on unreadable probe images instead "
                  "of skipping them. Default: False.",
    module_name=common.flag_module())
# jax.distributed.initialize's arguments (several processes or hosts).
flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, where the JAX "
    "coordinator listens (every process passes the same); with "
    "--num_processes and --process_id.", module_name=common.flag_module())
flags.DEFINE_integer("num_processes", None, "Processes of the run (1 = no "
                     "jax.distributed).", module_name=common.flag_module())
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. "
                     "num_processes - 1; process 0 writes the results.",
                     module_name=common.flag_module())
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize "
                  "even without the three flags above, which JAX then finds "
                  "itself (Cloud TPU pods, SLURM, Open MPI).",
                  module_name=common.flag_module())
flags.DEFINE_bool("score_labels", None, "After labelling, score every label "
                  "(analysis/explanation_scores.csv: simulation scores, "
                  "p- and q-values). Default: False.",
    module_name=common.flag_module())
FLAGS = flags.FLAGS
_ARGS: list[str] = []  # The command's flags, for the child of a
                       # multi-process run.


def _last_line(error: BaseException) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return lines[-1] if lines else type(error).__name__


def _config_file_error(argv: list[str], error: BaseException) -> str:
  """One line for a --config file that cannot be loaded."""
  given = [a.split("=", 1)[1] for a in argv if re.match(r"^--?config=", a)]
  spec = given[-1] if given else FLAGS["config"].default  # absl: the last.
  path = str(spec).split(":", 1)[0]
  if not os.path.isfile(path):
    return f"--config={spec}: no such config file {path!r}"
  return f"--config={spec}: cannot load it: {_last_line(error)}"


def _override_error(argv: list[str], error: BaseException) -> str:
  """One line for a --config.<name> override the config has no key for."""
  found = re.search(r"'([^'\\]+)", str(error))
  missing = found.group(1) if found else str(error)
  for arg in argv:
    match = re.match(r"^--?config\.([\w.]+)(=.*)?$", arg)
    if not match or missing not in match.group(1).split("."):
      continue
    path = match.group(1).split(".")
    parent = pipeline.default_config()
    for part in path[:path.index(missing)]:
      parent = parent.get(part) if hasattr(parent, "get") else None
    keys = sorted(parent.keys()) if hasattr(parent, "keys") else []
    near = difflib.get_close_matches(missing, keys, n=3)
    shown = ", ".join(keys)
    if len(shown) > 160:  # The line stays under 300 characters.
      shown = shown[:shown.rfind(", ", 0, 160)] + f", ... ({len(keys)} in all)"
    hint = (f"did you mean {', '.join(near)}?" if near
            else f"options there: {shown}" if keys else "")
    return (f"{arg}: the config has no option "
            f"{'.'.join(path[:path.index(missing) + 1])!r}"
            + (f"; {hint}" if hint else ""))
  return f"bad --config override: {_last_line(error)}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with every error as one `error: ...` line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    if "config file" in str(e):
      sys.exit(f"error: {_config_file_error(argv, e)}")
    sys.exit(f"error: {_last_line(e)}")
  except (AttributeError, KeyError) as e:  # --config.<unknown key>=...
    sys.exit(f"error: {_override_error(argv, e)}")
  except (OSError, SyntaxError) as e:  # A config file that did not load.
    sys.exit(f"error: {_config_file_error(argv, e)}")


def config_from_flags() -> dict:
  """The run's options: --config (overrides applied), then the reference
  flags; describe_neurons adds the defaults and checks them all."""
  config = {}
  if _CONFIG.value is not None:
    try:
      config = _CONFIG.value.to_dict()
    except OSError as e:  # The file did not load.
      raise ValueError(_config_file_error(sys.argv, e)) from None
  for name in list(_STR_FLAGS) + ["batch_size", "strict", "score_labels"]:
    if FLAGS[name].present:
      config[name] = FLAGS[name].value
  return config


def distributed_args() -> dict | None:
  """jax.distributed.initialize's arguments from the flags; None for a
  single-process run.

  Raises:
    ValueError: for an incomplete or inconsistent set of flags.
  """
  given = {"coordinator_address": FLAGS.coordinator_address,
           "num_processes": FLAGS.num_processes,
           "process_id": FLAGS.process_id}
  if not FLAGS.distributed and all(v is None for v in given.values()):
    return None
  if FLAGS.num_processes == 1 and not FLAGS.distributed:
    return None
  missing = [f"--{k}" for k, v in given.items() if v is None]
  if missing and not FLAGS.distributed:
    raise ValueError(f"{', '.join(missing)} missing: a multi-process run "
                     "needs --coordinator_address, --num_processes and "
                     "--process_id (or --distributed where JAX finds them)")
  n, i = FLAGS.num_processes, FLAGS.process_id
  if n is not None and n < 1:
    raise ValueError(f"--num_processes={n} must be >= 1")
  if i is not None and n is not None and not 0 <= i < n:
    raise ValueError(f"--process_id={i} must be between 0 and "
                     f"--num_processes - 1 = {n - 1}")
  return {k: v for k, v in given.items() if v is not None}


def _initialize(args: dict) -> None:
  """Starts JAX's distributed runtime (before any other JAX call)."""
  import jax  # pylint: disable=g-import-not-at-top
  # Collectives between CPU processes (the kernels' mesh, barriers).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**args)
  except (ValueError, RuntimeError) as e:
    if args:
      raise
    # --distributed alone: JAX looked for a cluster (TPU pod, SLURM, Open
    # MPI) and found none.
    raise ValueError("--distributed: JAX found no cluster to join "
                     f"({str(e).rstrip('.')}); "
                     "pass --coordinator_address, --num_processes and "
                     "--process_id") from e
  logging.info("process %d of %d (%d local device(s), %d in all)",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def _fail(message: str, code: int, multi: bool) -> None:
  """Exits with one `error:` line; a multi-process run skips the runtime's
  shutdown (it would wait for the other processes)."""
  message = " ".join(str(message).split())  # One line.
  logging.error("%s", message)
  print(f"error: {message}", file=sys.stderr)
  if multi:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_environment()
  try:
    args = distributed_args()
  except ValueError as e:
    _fail(str(e), 2, False)
  if args is not None and not launch.in_child():
    # The work runs in a child, so a runtime abort ends in one line.
    sys.exit(launch.run_child(launch.command_argv("describe", _ARGS),
                              FLAGS.process_id, FLAGS.num_processes))
  if args is not None:
    launch.watch_parent()
  try:
    config = config_from_flags()
    if args is not None:
      _initialize(args)
    results = pipeline.describe_neurons(config)
  except distributed.PeerLostError as e:
    _fail(str(e), 1, True)
  except (*common.USER_ERRORS, RuntimeError) as e:
    # Bad input (unknown names, missing files, unloadable weights): one line.
    if args is not None and "gloo" in str(e).lower():
      _fail(launch.lost_peer_message(FLAGS.process_id, FLAGS.num_processes),
            1, True)
    _fail(str(e), 2, args is not None)
  logging.info("timings (s): %s", results.config["timings_s"])


def run(argv=None):
  _ARGS[:] = list(argv[1:] if argv else sys.argv[1:])
  app.run(main, argv=argv, flags_parser=parse_flags)
