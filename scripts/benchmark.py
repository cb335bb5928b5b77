"""Runs one benchmark suite and appends its records as JSON lines.

Usage:
  python scripts/benchmark.py --suite=similarity --preset=full \
      --output=benchmarks/similarity.jsonl

Suites are the modules of benchmarks/ (at the repository root, beside
their records; not part of the installed package); each yields one record per
measurement, and every record written here also carries the suite, preset,
host, CPU model and flags, device list, a timestamp and the load average (`loadavg`: 1, 5 and
15 minutes; `load_avg_1min`, when the suite did not record its own). Wrap a
run in `flock /tmp/bench.lock ...` on a shared machine so benchmarks never
overlap.
"""

import importlib
import json
import os
import pkgutil
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchmarks  # pylint: disable=g-import-not-at-top

_SUITES = sorted(m.name for m in pkgutil.iter_modules(
    benchmarks.__path__) if not m.name.startswith("_"))

_SUITE = flags.DEFINE_enum("suite", None, _SUITES, "Benchmark suite to run.")
_PRESET = flags.DEFINE_string(
    "preset", "full", "Size preset of the suite (each suite lists its own).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "JSON-lines file to append to (default: "
    "benchmarks/<suite>.jsonl).")
_SET = flags.DEFINE_multi_string(
    "set", [], "key=value: overrides one argument of the preset (the value "
    "is read as JSON when it parses, else as a string), e.g. "
    "--set=baseline_repo=/tmp/main for suite cache.")
flags.mark_flag_as_required("suite")


def _preset(suite) -> dict:
  """The preset's arguments with --set's overrides."""
  args = dict(suite.PRESETS[_PRESET.value])
  for item in _SET.value:
    key, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"--set={item!r} is not key=value")
    try:
      args[key] = json.loads(value)
    except json.JSONDecodeError:
      args[key] = value
  return args


# CPU flags that decide which kernels XLA and PyTorch can use.
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
              "avx512_vnni", "fma")


def cpu_info() -> dict:
  """The CPU model and the flags that matter for its speed (Linux)."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
        if flags and model:
          break
  except OSError:
    pass
  return {"cpu_model": model,
          "cpu_flags": sorted(f for f in _CPU_FLAGS if f in flags)}


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  suite = importlib.import_module(f"benchmarks.{_SUITE.value}")
  if _PRESET.value not in suite.PRESETS:
    raise app.UsageError(f"--preset={_PRESET.value!r} is not a preset of suite "
                         f"{_SUITE.value!r}; allowed: {sorted(suite.PRESETS)}")
  output = _OUTPUT.value or os.path.join("benchmarks", f"{_SUITE.value}.jsonl")
  os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
  context = {
      "suite": _SUITE.value,
      "preset": _PRESET.value,
      "set": _SET.value,
      "host": platform.node(),
      "cpu_count": os.cpu_count(),
      **cpu_info(),
      "devices": [str(d) for d in jax.devices()],
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  with open(output, "a", encoding="utf-8") as f:
    for record in suite.run(**_preset(suite)):
      # The machine's load when the record was made (1, 5, 15 minutes).
      load = os.getloadavg()
      record = {**context, "loadavg": load, "load_avg_1min": load[0],
                **record}
      logging.info("%s", json.dumps(record))
      f.write(json.dumps(record) + "\n")
      f.flush()
  logging.info("wrote %s", output)


if __name__ == "__main__":
  app.run(main)
