"""The pipe protocol the PyTorch benchmark workers share (_worker.py)."""

import io
import json
import sys

import pytest

from torch_reference import worker as worker_lib


def _serve(monkeypatch, capsys, commands, handlers):
  monkeypatch.setattr(sys, "stdin", io.StringIO("".join(
      c + "\n" for c in commands)))
  worker_lib.serve(handlers)
  return [json.loads(line[3:]) for line in capsys.readouterr().out.splitlines()
          if line.startswith("@@ ")]


def test_serve_answers_each_command_until_quit(monkeypatch, capsys):
  calls = []
  handlers = {"run": lambda: calls.append(1) or {"s": 1.5},
              "info": lambda: {"v": "x"}}
  replies = _serve(monkeypatch, capsys,
                   ["run", "info", "  run  ", "quit", "run"], handlers)
  assert replies == ["ready", {"s": 1.5}, {"v": "x"}, {"s": 1.5}]
  assert len(calls) == 2  # Nothing is answered after "quit".


def test_serve_names_the_allowed_commands(monkeypatch, capsys):
  replies = _serve(monkeypatch, capsys, ["warmup"], {"run": lambda: 0})
  assert replies[0] == "ready"
  assert replies[1] == {
      "error": "unknown command 'warmup'; allowed: ['run', 'quit']"}


def test_serve_stops_at_end_of_input(monkeypatch, capsys):
  assert _serve(monkeypatch, capsys, [], {"run": lambda: 0}) == ["ready"]


def test_torch_worker_round_trip(monkeypatch, tmp_path):
  # A worker module that is not a PyTorch one: the protocol is the same.
  module = tmp_path / "echo_worker.py"
  module.write_text(
      "import sys\n"
      "from torch_reference import worker as _worker\n"
      "_worker.serve({'dir': lambda: sys.argv[1]})\n")
  worker = _spawn(monkeypatch, tmp_path, "echo_worker")
  try:
    assert worker.ready == "ready"
    assert worker("dir") == str(tmp_path)
    assert "allowed" in worker("nope")["error"]
  finally:
    worker.close()
  assert worker.proc.returncode == 0


def test_torch_worker_that_dies_raises(monkeypatch, tmp_path):
  (tmp_path / "dead_worker.py").write_text("raise SystemExit(3)\n")
  with pytest.raises(RuntimeError, match="exited with 3"):
    _spawn(monkeypatch, tmp_path, "dead_worker")


def _spawn(monkeypatch, tmp_path, module):
  """TorchWorker on a module in tmp_path (found through PYTHONPATH)."""
  monkeypatch.setenv("PYTHONPATH", ":".join(
      [str(tmp_path)] + [p for p in sys.path if p]))
  return worker_lib.TorchWorker(module, str(tmp_path))
