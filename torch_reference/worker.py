"""A PyTorch worker: a module of torch_reference run in a subprocess.

jax_dissect imports transformers with USE_TORCH=0, which hides its PyTorch
classes in that process, so the PyTorch side of a benchmark runs as

  USE_TORCH=1 python -m torch_reference.<module> WORK_DIR

and talks over pipes: the worker prints "@@ ready" once set up, then
answers each command line on stdin with one "@@ <json>" line on stdout
("quit" ends it). Commands are sent only between timed passes, so the
benchmark can alternate PyTorch and JAX passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TorchWorker:
  """A running worker module; call it with a command to get its answer."""

  def __init__(self, module: str, work_dir: str):
    self.proc = subprocess.Popen(
        [sys.executable, "-m", module, work_dir], cwd=_REPO,
        env={**os.environ, "USE_TORCH": "1"}, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    self.ready = self._read()

  def _read(self) -> Any:
    for line in self.proc.stdout:
      if line.startswith("@@ "):
        return json.loads(line[3:])
    raise RuntimeError(
        f"PyTorch benchmark worker exited with {self.proc.wait()}")

  def __call__(self, command: str) -> Any:
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.write("quit\n")
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


# ----------------------------------------------------------------------------
# The worker side (imported by the worker modules; stdlib only).
# ----------------------------------------------------------------------------


def reply(obj: Any) -> None:
  print("@@ " + json.dumps(obj), flush=True)


def serve(handlers: dict[str, Callable[[], Any]]) -> None:
  """Says "ready", then answers each stdin command until "quit" or EOF."""
  reply("ready")
  for line in sys.stdin:
    command = line.strip()
    if command == "quit":
      return
    handler = handlers.get(command)
    reply(handler() if handler else {
        "error": f"unknown command {command!r}; allowed: "
                 f"{sorted(handlers) + ['quit']}"})
