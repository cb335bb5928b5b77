"""A multi-process run's work in a child process, so a lost peer is one line.

When another process of a jax.distributed run dies, JAX's runtime either
raises in the next collective (the command then prints one `error:` line)
or, from its own threads, aborts the process with a C++ check failure and
a stack trace (it does so when the coordinator, process 0, disappears, or
when a peer misses its heartbeats). That abort cannot be caught inside the
process, so a multi-process command runs its work in a child (`run_child`):
the parent forwards the child's output, swallows the abort's dump, and
ends with one line saying what happened. The child calls `watch_parent`
first, so it dies with the parent (Linux): killing the command kills its
work.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

CHILD_ENV = "JAX_DISSECT_CHILD"
_PARENT_ENV = "JAX_DISSECT_PARENT_PID"
# The first line of the runtime's abort; everything after it is the dump.
_ABORT = re.compile(r"^F\d{4} .*(Terminating process|Check failed)|"
                    r"^\*\*\* Check failure stack trace|^terminate called")


def in_child() -> bool:
  """Whether this process is the child of `run_child` (it does the work)."""
  return os.environ.get(CHILD_ENV) == "1"


def watch_parent() -> None:
  """In the child: be killed when the parent dies (Linux; elsewhere a
  no-op), and exit at once if it already has."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG.
  except (OSError, AttributeError):  # Not Linux: the child may outlive us.
    return
  if str(os.getppid()) != os.environ.get(_PARENT_ENV):
    os._exit(1)  # pylint: disable=protected-access


def lost_peer_message(process_id: int | None, num_processes: int | None
                      ) -> str:
  who = (f"process {process_id} of {num_processes}"
         if process_id is not None and num_processes else "this process")
  return (f"{who} lost contact with the other processes of the run "
          "(the JAX distributed runtime stopped it: another process stopped "
          "or its host is unreachable); finished cache shards are kept: "
          "start every process again to resume")


def command_argv(command: str, args: list[str]) -> list[str]:
  """`python -m jax_dissect <command> <args>` with this interpreter."""
  return [sys.executable, "-m", "jax_dissect", command, *args]


def run_child(argv: list[str], process_id: int | None,
              num_processes: int | None) -> int:
  """Runs `argv` (e.g. `command_argv(...)`) as a child; its exit code.

  The child's stdout passes through; its stderr too, but for the runtime's
  abort dump, replaced by one `error:` line (exit code 1).
  """
  package_root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  env = dict(os.environ)
  env[CHILD_ENV] = "1"
  env[_PARENT_ENV] = str(os.getpid())
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (package_root, env.get("PYTHONPATH")) if p)
  proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True,
                          errors="replace")
  forward = lambda signum, frame: proc.send_signal(signum)
  old = {s: signal.signal(s, forward) for s in (signal.SIGTERM,
                                                signal.SIGINT)}
  aborted = False
  try:
    for line in proc.stderr:
      aborted = aborted or bool(_ABORT.search(line))
      if not aborted:
        sys.stderr.write(line)
        sys.stderr.flush()
    code = proc.wait()
  finally:
    for s, handler in old.items():
      signal.signal(s, handler)
  if aborted:
    print(f"error: {lost_peer_message(process_id, num_processes)}",
          file=sys.stderr)
    return 1
  if code < 0:
    print(f"error: the run's work process was stopped by signal {-code}",
          file=sys.stderr)
    return 1
  return code
