"""Runs one benchmark suite and appends its records as JSON lines.

Usage:
  python scripts/benchmark.py --suite=similarity --preset=full \
      --output=benchmarks/similarity.jsonl

Suites are the modules of jax_dissect/benchmarks/; each yields one record per
measurement, and every record written here also carries the suite, preset,
host, device list, a timestamp and the 1-minute load average (when the
suite did not record its own).
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
import jax_dissect.benchmarks  # pylint: disable=g-import-not-at-top

_SUITES = sorted(m.name for m in pkgutil.iter_modules(
    jax_dissect.benchmarks.__path__) if not m.name.startswith("_"))

_SUITE = flags.DEFINE_enum("suite", None, _SUITES, "Benchmark suite to run.")
_PRESET = flags.DEFINE_string(
    "preset", "full", "Size preset of the suite (each suite lists its own).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "JSON-lines file to append to (default: "
    "benchmarks/<suite>.jsonl).")
flags.mark_flag_as_required("suite")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  suite = importlib.import_module(f"jax_dissect.benchmarks.{_SUITE.value}")
  if _PRESET.value not in suite.PRESETS:
    raise app.UsageError(f"--preset={_PRESET.value!r} is not a preset of suite "
                         f"{_SUITE.value!r}; allowed: {sorted(suite.PRESETS)}")
  output = _OUTPUT.value or os.path.join("benchmarks", f"{_SUITE.value}.jsonl")
  os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
  context = {
      "suite": _SUITE.value,
      "preset": _PRESET.value,
      "host": platform.node(),
      "cpu_count": os.cpu_count(),
      "devices": [str(d) for d in jax.devices()],
      "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  with open(output, "a", encoding="utf-8") as f:
    for record in suite.run(**suite.PRESETS[_PRESET.value]):
      record = {**context, "load_avg_1min": os.getloadavg()[0], **record}
      logging.info("%s", json.dumps(record))
      f.write(json.dumps(record) + "\n")
      f.flush()
  logging.info("wrote %s", output)


if __name__ == "__main__":
  app.run(main)
