"""commands/console.py and common.py in-process: exit status of each kind
of error, one-line messages, the progress display, the hub probe."""

import http.server
import io
import os
import socket
import sys
import threading
import time
from unittest import mock

from absl import flags
import pytest

from jax_dissect.commands import common
from jax_dissect.commands import console
from jax_dissect.runtime import distributed
from jax_dissect.runtime import progress
from jax_dissect.store import integrity


@pytest.mark.parametrize("error,code", [
    (console.UsageError("x"), 2),
    (ValueError("similarity_fn='x' is not valid"), 2),
    (FileNotFoundError("no such file"), 2),
    (flags.Error("Unknown command line flag 'nope'"), 2),
    (integrity.DamagedEntryError("damaged"), 1),  # A ValueError, at run time.
    (distributed.PeerLostError("lost"), 1),
    (RuntimeError("XLA: out of memory"), 1),
    (OSError(28, "No space left on device"), 1),
    (TypeError("bug"), 1),
    (KeyboardInterrupt(), 130),
])
def test_exit_codes(error, code):
  assert console.exit_code(error) == code


def test_messages_are_one_line_and_bounded():
  assert console.error_message(ValueError("a\n  b")) == "a b"
  long = console.error_message(ValueError("x" * 1000))
  assert len("error: " + long) == console.MAX_LINE and long.endswith("...")
  assert console.error_message(TypeError("bad")).startswith(
      "TypeError: bad (a bug? run again with --verbosity=1")
  assert "run the command again to resume" in console.error_message(
      KeyboardInterrupt())


def test_progress_display_on_a_file_and_a_terminal(monkeypatch):
  out = io.StringIO()
  display = console.ProgressDisplay(out, tty=False, every_s=0.0,
                                    min_stage_s=0.0, min_count_s=0.0)
  monkeypatch.setattr(progress, "_display", display)
  with progress.stage("activations"):
    outer = progress.Progress("activations", 100)
    outer.update(0)
    inner = progress.Progress("activations (images)", 100)
    inner.update(50)
    inner.update(50)  # Counts at the total: no periodic line.
    outer.update(100, final=True)
  lines = out.getvalue().splitlines()
  assert lines[0].startswith("activations (images): 50/100  50%")
  assert lines[1].startswith("activations: 100/100 in ")
  assert len(lines) == 2  # The stage printed no second line of its own.
  with pytest.raises(KeyboardInterrupt):
    with progress.stage("similarity_layer4"):
      raise KeyboardInterrupt
  assert len(out.getvalue().splitlines()) == 2  # No "done" when stopped.
  with progress.stage("similarity_fc"):
    pass
  assert out.getvalue().splitlines()[-1].startswith("similarity_fc: done in")

  tty = io.StringIO()
  bar = console.ProgressDisplay(tty, tty=True, redraw_s=0.0)
  p = progress.Progress("CLIP images", 200)
  p.update(0)
  p.done = 100
  p.start -= 10.0  # 100 in 10 s: 10/s, 10 s left.
  bar.update(p, False)
  assert "\r\x1b[K" in tty.getvalue()
  assert "CLIP images  [############............]  100/200  50%  10.0/s  " \
         "ETA 10 s" in tty.getvalue()
  bar.clear()
  assert tty.getvalue().endswith("\r\x1b[K")


def test_hub_ids_and_an_unreachable_hub_is_found_fast(monkeypatch, tmp_path):
  (tmp_path / "owner").mkdir()
  (tmp_path / "owner" / "model").mkdir()
  monkeypatch.chdir(tmp_path)
  assert common.hub_ids(["openai/clip-vit-base-patch16", "random", "",
                         "owner/model", "/abs/path", "a/b/c", None]) == [
                             "openai/clip-vit-base-patch16"]
  # A closed port answers at once; a server that accepts the connection
  # but never answers is given up after the timeout; one that answers
  # (even 404) is reachable.
  monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
  assert not common.hub_reachable(timeout_s=2.0)
  with socket.socket() as silent:
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    monkeypatch.setenv("HF_ENDPOINT",
                       f"http://127.0.0.1:{silent.getsockname()[1]}")
    start = time.perf_counter()
    assert not common.hub_reachable(timeout_s=0.5)
    assert time.perf_counter() - start < 1.5
  server = http.server.HTTPServer(("127.0.0.1", 0),
                                  http.server.BaseHTTPRequestHandler)
  threading.Thread(target=server.handle_request, daemon=True).start()
  monkeypatch.setenv("HF_ENDPOINT",
                     f"http://127.0.0.1:{server.server_address[1]}")
  assert common.hub_reachable(timeout_s=5.0)
  server.server_close()
  monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
  # prepare_hub switches the process to offline mode: undone afterwards.
  monkeypatch.setenv("HF_HUB_OFFLINE", "")
  monkeypatch.delenv("HF_HUB_OFFLINE")
  constants = sys.modules.get("huggingface_hub.constants")
  if constants is not None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
  assert common.prepare_hub(["random"])  # No hub id: nothing probed.
  assert "HF_HUB_OFFLINE" not in os.environ
  assert not common.prepare_hub(["openai/clip-vit-base-patch16"])
  assert os.environ["HF_HUB_OFFLINE"] == "1"
  message = common.offline_message(
      OSError("cannot load the CLIP model 'openai/clip-vit-base-patch16': "
              "..."), {"clip_model": "openai/clip-vit-base-patch16"})
  assert message.startswith("--clip_model=openai/clip-vit-base-patch16: the "
                            "Hugging Face hub cannot be reached")
  assert len("error: " + message) <= console.MAX_LINE
  assert common.offline_message(ValueError("other"), {
      "clip_model": "openai/clip-vit-base-patch16"}) is None


def test_quiet_log_shows_our_warnings_once_and_hides_libraries(tmp_path):
  """The quiet handler: the package's warnings once each, other
  libraries' only from ERROR up."""
  import logging  # pylint: disable=g-import-not-at-top
  handler = console._QuietHandler(None)  # pylint: disable=protected-access
  ours = os.path.join(console._PACKAGE_DIR, "analyses", "x.py")  # pylint: disable=protected-access
  record = lambda level, path, msg: logging.LogRecord(
      "absl", level, path, 1, msg, None, None)
  err = io.StringIO()
  with mock.patch.object(sys, "stderr", err):
    for _ in range(3):
      handler.emit(record(logging.WARNING, ours, "956 of 1000 not found"))
    handler.emit(record(logging.WARNING, "/site-packages/jax/x.py",
                        "An NVIDIA GPU may be present"))
    handler.emit(record(logging.INFO, ours, "stage x: start"))
    handler.emit(record(logging.ERROR, "/site-packages/orbax/y.py", "bad"))
  assert err.getvalue().splitlines() == ["warning: 956 of 1000 not found",
                                         "error: bad"]
