"""commands/launch.py: the child of a multi-process command and its abort."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from jax_dissect.commands import launch
from tests import helpers

REPO = helpers.REPO

# What JAX's runtime prints when it aborts a process whose peer died.
_ABORT = textwrap.dedent("""\
    import os, sys
    print("I1123 log line before", file=sys.stderr, flush=True)
    print("F1123 22:56:53.685617   29538 client.h:80] Terminating process "
          "because the JAX distributed service detected fatal errors.",
          file=sys.stderr)
    print("*** Check failure stack trace: ***", file=sys.stderr)
    print("    @     0x7fab6ca40634  absl::LogMessage::SendToLog()",
          file=sys.stderr, flush=True)
    os.abort()
""")


def _run(code, capfd):
  rc = launch.run_child([sys.executable, "-c", code], 1, 2)
  return rc, capfd.readouterr().err


def test_runtime_abort_becomes_one_line(capfd):
  rc, err = _run(_ABORT, capfd)
  assert rc == 1
  assert "I1123 log line before" in err
  assert "Check failure" not in err and "0x7fab" not in err
  errors = [l for l in err.splitlines() if l.startswith("error:")]
  assert errors == [f"error: {launch.lost_peer_message(1, 2)}"]
  assert "process 1 of 2 lost contact" in errors[0]


@pytest.mark.parametrize("code,rc", [("import sys; sys.exit(0)", 0),
                                     ("import sys; sys.exit(3)", 3)])
def test_exit_codes_pass_through(capfd, code, rc):
  assert _run(code, capfd)[0] == rc


def test_child_killed_by_a_signal(capfd):
  rc, err = _run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                 capfd)
  assert rc == 1 and "stopped by signal 9" in err


def test_child_knows_it_is_the_child_and_watches_its_parent(capfd):
  rc, _ = _run("from jax_dissect.commands import launch; import sys; "
               "launch.watch_parent(); "
               "sys.exit(0 if launch.in_child() else 5)", capfd)
  assert rc == 0
  assert not launch.in_child()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG")
def test_orphaned_child_stops(tmp_path):
  """A child whose parent was killed is killed too (Linux)."""
  pid_file = tmp_path / "child.pid"
  parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
      import sys
      from jax_dissect.commands import launch
      launch.run_child([sys.executable, "-c", '''
      import os, time
      from jax_dissect.commands import launch
      launch.watch_parent()
      open({str(pid_file)!r}, "w").write(str(os.getpid()))
      time.sleep(60)
      '''.replace(chr(10) + "      ", chr(10))], 0, 2)
      """)], cwd=REPO)
  deadline = time.monotonic() + 60
  while not pid_file.exists() or not pid_file.read_text():
    assert time.monotonic() < deadline and parent.poll() is None
    time.sleep(0.05)
  child = int(pid_file.read_text())
  parent.kill()
  parent.wait()
  deadline = time.monotonic() + 10
  while os.path.exists(f"/proc/{child}") and _alive(child):
    assert time.monotonic() < deadline, "the child outlived its parent"
    time.sleep(0.05)


def _alive(pid):
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      return f.read().split()[2] != "Z"
  except OSError:
    return False


def test_bad_process_flags_are_one_line(tmp_path):
  script = launch.command_argv("describe", [
      "--num_processes=2", f"--result_dir={tmp_path}"])
  done = subprocess.run(script, cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      "error: --coordinator_address, --process_id missing: a multi-process "
      "run needs --coordinator_address, --num_processes and --process_id (or "
      "--distributed where JAX finds them)")


def test_distributed_flag_calls_initialize_without_arguments(tmp_path):
  # No cluster here: JAX's argument-less initialize finds no coordinator,
  # and the command says so in one line.
  script = launch.command_argv("describe", [
      "--distributed", f"--result_dir={tmp_path}"])
  done = subprocess.run(script, cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --distributed: JAX found no cluster to "
                         "join (coordinator_address should be defined"), last
  assert "Traceback" not in done.stderr
