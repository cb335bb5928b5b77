"""`jax-dissect describe` / scripts/describe_neurons.py: label every neuron.

  jax-dissect describe --config=resnet18_cifar100:smoke --result_dir=results/smoke
  jax-dissect describe --config=resnet50_imagenet --config.similarity_fn=wpmi \\
      --result_dir=results/rn50

--config is a shipped config by name (resnet18_cifar100, resnet18_places365,
resnet50_imagenet; `:smoke` is the offline variant) or a config file
(`configs/resnet18_cifar100.py:smoke` in a checkout, or your own). Flags
with the reference CLI's names override the config; without --config the
defaults are the reference's (resnet50, ViT-B/16 CLIP, soft_wpmi...).
`--config.<name>=value` sets any option of the config, nested ones too
(`--config.similarity_kwargs.top_k=50`). A missing config, an unknown
option or a bad value ends the command with one `error: ...` line (exit 2).

Several processes (hosts) share a run with JAX's own runtime: start the same
command on every host with --coordinator_address (host:port of process 0),
--num_processes and --process_id, or with --distributed alone where JAX
finds them itself (Cloud TPU pods, SLURM, Open MPI):

  python scripts/describe_neurons.py --config=... --coordinator_address=\\
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

from absl import flags
from absl import logging

from jax_dissect import configs
from jax_dissect.commands import common
from jax_dissect.commands import console
from jax_dissect.commands import launch

FLAGS = flags.FLAGS
# The reference CLI's flags; each overrides the config value when given.
_STR_FLAGS = {
    "clip_model": "CLIP or SigLIP model (its config.json's model_type: "
                  "clip, siglip, siglip2): hub id, local directory, or "
                  "'random' (a random CLIP).",
    "target_model": "Target model: registry name (resnet50, vit_b16, "
                    "clip_vision, ...) or package.module:factory.",
    "target_layers": "Comma-separated layer paths to dissect.",
    "d_probe": "Probe data set (folder:<dir>, tfds:<name>:<split>, an alias "
               "such as imagenet_val or cifar100_val, or a+b).",
    "concept_set": "Concept set file, one concept per line.",
    "pool_mode": "Spatial pooling of conv maps: avg or max.",
    "token_pool": "Pooling of (B, T, C) token maps (ViTs): cls, mean, "
                  "patch_mean, patch_max or a prefix token (reg0).",
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
_OTHER_FLAGS = ("batch_size", "strict", "score_labels")
# Options that may name a Hugging Face hub repo.
_HUB_OPTIONS = ("clip_model", "target_model", "target_weights",
                "clip_tokenizer")
_ARGS: list[str] = []  # The command's flags, for the child of a
                       # multi-process run.
_STATE = {"defined": False, "config": None}


def define_flags() -> None:
  """Declares the command's flags (once)."""
  if _STATE["defined"]:
    return
  _STATE["defined"] = True
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
  defaults = pipeline.default_config()
  _STATE["config"] = config_flags.DEFINE_config_file(
      "config", None, "A shipped config by name (" +
      ", ".join(configs.names()) + "; name:smoke for the offline variant) "
      "or an ml_collections config file (path[:arg]).")
  FLAGS.register_flag_by_module(common.FLAG_MODULE, FLAGS["config"])
  module = common.FLAG_MODULE
  for name, text in _STR_FLAGS.items():
    flags.DEFINE_string(name, None, f"{text} Default: {defaults[name]!r}.",
                        module_name=module)
  flags.DEFINE_integer("batch_size", None,
                       "Images (texts) per device per forward call. "
                       f"Default: {defaults.batch_size}.", module_name=module)
  flags.DEFINE_bool("strict", None, "Fail on unreadable probe images "
                    "instead of skipping them. Default: False.",
                    module_name=module)
  # jax.distributed.initialize's arguments (several processes or hosts).
  flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0, where the JAX "
      "coordinator listens (every process passes the same); with "
      "--num_processes and --process_id.", module_name=module)
  flags.DEFINE_integer("num_processes", None, "Processes of the run (1 = no "
                       "jax.distributed).", module_name=module)
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. "
                       "num_processes - 1; process 0 writes the results.",
                       module_name=module)
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize "
                    "even without the three flags above, which JAX then "
                    "finds itself (Cloud TPU pods, SLURM, Open MPI).",
                    module_name=module)
  flags.DEFINE_bool("compilation_cache", True, "Keep compiled XLA programs "
                    "in <activation_dir>/jax_compilation_cache, so the next "
                    "run with the same shapes skips compiling.",
                    module_name=module)
  flags.DEFINE_bool("score_labels", None, "After labelling, score every "
                    "label (analysis/explanation_scores.csv: simulation "
                    "scores, p- and q-values). Default: False.",
                    module_name=module)


def help_notes() -> list[str]:
  """Help lines after the flags."""
  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
  keys = sorted(pipeline.default_config().keys())
  return ["--config.<option>=VALUE sets any option of the config (nested "
          "ones too: --config.similarity_kwargs.top_k=50); options: " +
          ", ".join(keys) + "."]


# ----------------------------------------------------------------------------
# --config.
# ----------------------------------------------------------------------------


def resolve_config_args(argv: list[str]) -> list[str]:
  """argv with --config's value as a file: a shipped config's name (or the
  repository's configs/<name>.py, run from elsewhere) becomes its path.

  Raises:
    console.UsageError: neither a file nor a shipped config.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    match = re.match(r"^--?config(=(.*))?$", arg)
    if not match:
      continue
    if match.group(1) is None:  # --config VALUE
      if i + 1 < len(out):
        out[i + 1] = _resolve(out[i + 1])
      continue
    out[i] = f"--config={_resolve(match.group(2))}"
  return out


def _resolve(spec: str) -> str:
  try:
    value = configs.resolve(spec)
  except ValueError as e:
    raise console.UsageError(str(e)) from None
  # A config file beside an old-style configs/ package (`from configs
  # import common`) finds it.
  folder = os.path.dirname(os.path.abspath(value.split(":", 1)[0]))
  if os.path.isfile(os.path.join(folder, "__init__.py")):
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.append(root)
  return value


def _last_line(error: BaseException) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return lines[-1] if lines else type(error).__name__


def _config_spec(argv: list[str]) -> str:
  """The --config value absl uses: the last one given."""
  spec = None
  for i, a in enumerate(argv):
    if re.match(r"^--?config=", a):
      spec = a.split("=", 1)[1]
    elif re.match(r"^--?config$", a) and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec if spec is not None else str(FLAGS["config"].default)


def _config_file_error(argv: list[str], error: BaseException,
                       given: list[str] | None = None) -> str:
  """One line for a --config file that cannot be loaded (`argv` with the
  file's path, `given` as the user wrote it)."""
  spec, shown = _config_spec(argv), _config_spec(given or argv)
  path = str(spec).split(":", 1)[0]
  if not os.path.isfile(path):
    return f"--config={shown}: no such config file {path!r}"
  return f"--config={shown}: cannot load it: {_last_line(error)}"


def _override_error(argv: list[str], error: BaseException) -> str:
  """One line for a --config.<name> override the config has no key for."""
  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
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
  """absl's flag parsing with every error as a console.UsageError."""
  given, argv = argv, resolve_config_args(argv)
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    if "config file" in str(e):
      raise console.UsageError(_config_file_error(argv, e, given)) from None
    raise console.UsageError(_last_line(e)) from None
  except (AttributeError, KeyError) as e:  # --config.<unknown key>=...
    raise console.UsageError(_override_error(argv, e)) from None
  except (OSError, SyntaxError) as e:  # A config file that did not load.
    raise console.UsageError(_config_file_error(argv, e, given)) from None
  if len(rest) > 1:
    raise console.UsageError(f"unexpected arguments: {rest[1:]}")
  return rest


def config_from_flags() -> dict:
  """The run's options: --config (overrides applied), then the reference
  flags; describe_neurons adds the defaults and checks them all."""
  config = {}
  flag = _STATE["config"]
  if flag is not None and flag.value is not None:
    try:
      config = flag.value.to_dict()
    except OSError as e:  # The file did not load.
      raise ValueError(_config_file_error(sys.argv, e)) from None
  for name in list(_STR_FLAGS) + list(_OTHER_FLAGS):
    if FLAGS[name].present:
      config[name] = FLAGS[name].value
  return config


def _hub_names(config: dict) -> dict[str, str]:
  """{option: hub id} of the options that name a hub repo, with the
  target's default weights (as target_weights) when none are given."""
  named = {k: config[k] for k in _HUB_OPTIONS
           if common.hub_ids([config.get(k)])}
  if not config.get("target_weights"):
    from jax_dissect import models  # pylint: disable=g-import-not-at-top
    try:
      default = models.get_model(
          config.get("target_model") or "resnet50").default_weights
    except (ValueError, KeyError, AttributeError, ImportError):
      default = ""
    if common.hub_ids([default]):
      named["target_weights"] = default
  return named


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


def _summary(run, result_dir: str) -> list[str]:
  """What the command prints on stdout when done."""
  layers = run.layers
  if not layers:
    return []
  counts = {l: 0 for l in layers}
  for n in run.neurons:
    counts[n.layer] += 1
  shown = os.path.relpath(result_dir) if not os.path.relpath(
      result_dir).startswith("..") else result_dir
  return [f"wrote {shown}: {len(run.neurons)} neurons of {len(layers)} "
          f"layer(s) ({', '.join(f'{l} {k}' for l, k in counts.items())}), "
          f"{len(run.concepts)} concepts, {len(run.image_ids)} probe images",
          f"next: jax-dissect report --results_dir={shown}"]


def main(argv) -> None:
  del argv
  common.setup_environment()
  args = distributed_args()
  if args is not None and not launch.in_child():
    # The work runs in a child, so a runtime abort ends in one line.
    sys.exit(launch.run_child(launch.command_argv("describe", _ARGS),
                              FLAGS.process_id, FLAGS.num_processes))
  if args is not None:
    launch.watch_parent()
  config = config_from_flags()
  if FLAGS.compilation_cache:
    from jax_dissect import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
    common.enable_compilation_cache(
        lambda: dict(config).get("activation_dir") or
        pipeline_lib.default_config().activation_dir)
  named = _hub_names(config)
  reachable = common.prepare_hub(named.values())
  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
  from jax_dissect import report  # pylint: disable=g-import-not-at-top
  from jax_dissect.runtime import distributed  # pylint: disable=g-import-not-at-top
  try:
    if args is not None:
      _initialize(args)
    run = pipeline.describe_neurons(config)
  except Exception as e:  # pylint: disable=broad-except
    if (args is not None and isinstance(e, RuntimeError) and
        not isinstance(e, distributed.PeerLostError)
        and "gloo" in str(e).lower()):
      raise distributed.PeerLostError(launch.lost_peer_message(
          FLAGS.process_id, FLAGS.num_processes)) from e
    message = None if reachable else common.offline_message(e, named)
    if message:
      raise console.UsageError(message) from e
    raise
  logging.info("timings (s): %s", run.config["timings_s"])
  if run.neurons:  # Process 0: top images of probe sets without files.
    report.save_thumbnails(run)
    for line in _summary(run, run.path):
      print(line)


def run(argv: list[str] | None = None) -> None:
  """Parses the flags and runs; exits with the command's status."""
  argv = list(sys.argv if argv is None else argv)
  _ARGS[:] = argv[1:]
  multi = {"on": False}

  def go():
    define_flags()
    parse_flags(argv)
    multi["on"] = (FLAGS.num_processes or 1) > 1 or FLAGS.distributed
    console.setup_output(argv)
    main(argv)

  console.guarded(go, hard=lambda: multi["on"])
