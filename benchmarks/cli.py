"""Wall time of the command line's help, as a user types it.

Each record is one command's `--help` in a fresh interpreter (median of
`repeats`): `python -m jax_dissect <command> --help`, and the installed
`jax-dissect` console script beside the interpreter when there is one. The
target (issue 24) is under 2 s on a laptop; the help path imports neither
jax nor transformers (tests/commands/test_cli.py checks that), so the time
is Python's start and the package's root. For comparison, `baseline`
records `python -c pass` and `python -c "import jax"`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Iterator

PRESETS = {
    "full": dict(commands=("", "describe", "analyze", "report", "convert",
                           "stability", "evaluate", "dnd"), repeats=5),
    "quick": dict(commands=("", "describe", "stability"), repeats=1),
}
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _seconds(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
  start = time.perf_counter()
  proc = subprocess.run(argv, env=env, capture_output=True, check=False,
                        timeout=300)
  return time.perf_counter() - start, proc.returncode


def run(commands=PRESETS["full"]["commands"], repeats: int = 5
        ) -> Iterator[dict]:
  env = dict(os.environ, PYTHONPATH=_REPO, JAX_PLATFORMS="cpu")
  script = os.path.join(os.path.dirname(sys.executable), "jax-dissect")
  ways = {"python -m jax_dissect": [sys.executable, "-m", "jax_dissect"]}
  if os.path.exists(script):
    ways["jax-dissect"] = [script]
  for name, argv in (("python -c pass", [sys.executable, "-c", "pass"]),
                     ("import jax", [sys.executable, "-c", "import jax"])):
    times = [_seconds(argv, env)[0] for _ in range(repeats)]
    yield {"measure": "baseline", "what": name,
           "seconds_median": statistics.median(times),
           "seconds_max": max(times), "repeats": repeats}
  for way, prefix in ways.items():
    for command in commands:
      argv = prefix + ([command] if command else []) + ["--help"]
      runs = [_seconds(argv, env) for _ in range(repeats)]
      times = [t for t, _ in runs]
      yield {"measure": "help", "way": way, "command": command or "(none)",
             "exit_codes": sorted({c for _, c in runs}),
             "seconds_median": statistics.median(times),
             "seconds_max": max(times), "repeats": repeats}
