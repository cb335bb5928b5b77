"""Many describe_neurons runs on one cache: concurrent runs and kill -9.

  python tests/cache_stress.py SPEC.json

SPEC holds the run's options ("config": describe_neurons options, with
result_dir and activation_dir left to this script), a work directory and
the experiment:

- {"mode": "concurrent", "trials": 10}: per trial, two runs start at once on
  a fresh, empty cache; each writes its own result directory.
- {"mode": "faults", "kills": 20, "seed": 0}: one run is killed with SIGKILL
  at a random time (seeded) and resumed, `kills` times, then finished. The
  kill times are uniform over the length of a run: at first that of a run
  on an empty cache; once a run ends before its kill time (the cache is then
  full), that run's length. A run that ends before its kill is not counted.

Before either, a reference run (its own cache) gives the expected results
and fills JAX's compilation cache ("jax_cache", shared between experiments),
so that later runs only read it (its writes are not atomic) and start
computing at once. The process imports
the library once without starting JAX's runtime and forks a child per run
(a run then starts in milliseconds, not the seconds of a fresh Python); a
child is a separate process as a second command would be: its own file
descriptors and locks. Prints one JSON line per run: {"trial", "run",
"status", "seconds"...}.
"""

import json
import os
import random
import signal
import sys
import time
import traceback

from absl import logging

from jax_dissect import pipeline
from jax_dissect.commands import common as commands


def _preload() -> None:
  """Imports, before any fork, what runs import lazily (not JAX's runtime:
  it is not safe to fork once started)."""
  commands.setup_environment()  # As the command line: no torch.
  # pylint: disable=g-import-not-at-top,unused-import
  from jax_dissect.runtime import hub as hf_loading
  assert hf_loading.transformers_lib().FlaxCLIPModel  # And its Flax CLIP.


def _start(config: dict, result_dir: str, cache_dir: str) -> int:
  pid = os.fork()
  if pid:
    return pid
  status = 0
  try:
    logging.set_verbosity(logging.WARNING)
    pipeline.describe_neurons({**config, "result_dir": result_dir,
                               "activation_dir": cache_dir})
  except BaseException as e:  # pylint: disable=broad-except
    print(json.dumps({"child_error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc()[-2000:]}),
          file=sys.stderr, flush=True)
    status = 1
  finally:
    os._exit(status)  # pylint: disable=protected-access


def _wait(pid: int) -> int:
  _, status = os.waitpid(pid, 0)
  return (os.WEXITSTATUS(status) if os.WIFEXITED(status)
          else -os.WTERMSIG(status))  # -9 for SIGKILL.


def _emit(**record) -> None:
  print(json.dumps(record), flush=True)


def _reference(spec: dict) -> None:
  work = spec["work"]
  t0 = time.monotonic()
  status = _wait(_start(spec["config"], f"{work}/reference",
                        f"{work}/reference_cache"))
  seconds = time.monotonic() - t0
  _emit(trial=-1, run="reference", status=status, seconds=seconds)
  if status:
    sys.exit(f"the reference run failed ({status})")


def concurrent(spec: dict) -> None:
  work = spec["work"]
  for trial in range(spec["trials"]):
    cache = f"{work}/trial{trial}/cache"
    t0 = time.monotonic()
    pids = {name: _start(spec["config"], f"{work}/trial{trial}/{name}", cache)
            for name in ("a", "b")}
    for name, pid in pids.items():
      _emit(trial=trial, run=name, status=_wait(pid),
            seconds=time.monotonic() - t0)


def faults(spec: dict) -> None:
  work = spec["work"]
  rng = random.Random(spec["seed"])
  # The length of a run on an empty cache, JAX's cache now warm.
  t0 = time.monotonic()
  if _wait(_start(spec["config"], f"{work}/timing", f"{work}/timing_cache")):
    sys.exit("the timing run failed")
  run_s = time.monotonic() - t0
  cache, result = f"{work}/faults/cache", f"{work}/faults/result"
  kills = 0
  while kills < spec["kills"]:
    delay = rng.uniform(0.0, run_s)
    t0 = time.monotonic()
    pid = _start(spec["config"], result, cache)
    status = None
    while status is None and time.monotonic() - t0 < delay:
      done, raw = os.waitpid(pid, os.WNOHANG)
      if done:  # Finished before its kill.
        status = os.WEXITSTATUS(raw) if os.WIFEXITED(raw) else -1
      time.sleep(0.005)
    if status is None:
      os.kill(pid, signal.SIGKILL)
      status = _wait(pid)  # May have ended just before the kill.
    if status == -signal.SIGKILL:
      kills += 1
    else:
      run_s = time.monotonic() - t0
    _emit(trial=kills, run="killed" if status == -signal.SIGKILL else "ended",
          delay=delay, status=status, seconds=time.monotonic() - t0)
  t0 = time.monotonic()
  _emit(trial=spec["kills"], run="final",
        status=_wait(_start(spec["config"], result, cache)),
        seconds=time.monotonic() - t0)


def main() -> None:
  with open(sys.argv[1], encoding="utf-8") as f:
    spec = json.load(f)
  _preload()
  import jax  # pylint: disable=g-import-not-at-top
  # Set before JAX's runtime starts (it starts in the children).
  jax.config.update("jax_compilation_cache_dir", spec["jax_cache"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  _reference(spec)
  if spec["mode"] == "concurrent":
    concurrent(spec)
  else:
    faults(spec)


if __name__ == "__main__":
  main()
