"""What a command prints: quiet logs, a progress bar, one-line errors, and
the exit status.

Exit status (docs/cli.md):

  0    done
  1    failed while running (I/O, a damaged cache, a lost process, a bug)
  2    bad usage: an unknown command, flag, option or name, a bad value, a
       file that does not exist (the `error:` line says what to pass)
  130  interrupted (Ctrl-C)

Every error is one `error: ...` line on stderr (at most MAX_LINE
characters), printed once. By default a command is quiet: its own warnings
(`warning: ...`) and errors, a progress bar on a terminal (or a line per
finished stage in a log file), nothing from other libraries.
`--verbosity=0` (or --alsologtostderr) shows every log line as before,
`--verbosity=1` debug lines too and a failure's traceback.
"""

from __future__ import annotations

from collections.abc import Callable
import logging as py_logging
import os
import shutil
import sys
import threading
import time
import traceback
from typing import Any, NoReturn, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
MAX_LINE = 300
# The package's own files: their warnings are shown in quiet mode.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UsageError(Exception):
  """The command line is wrong (exit 2)."""


def _usage_errors() -> tuple[type[BaseException], ...]:
  """Exceptions that mean bad input: the library raises ValueError (and
  FileNotFoundError...) for bad options, names, values and paths."""
  out: list[type[BaseException]] = [UsageError, ValueError,
                                    FileNotFoundError, NotADirectoryError,
                                    IsADirectoryError]
  flags = sys.modules.get("absl.flags")
  if flags is not None:
    out.append(flags.Error)
  app = sys.modules.get("absl.app")
  if app is not None:
    out.append(app.UsageError)
  return tuple(out)


# A model that cannot be loaded by the name given (not on the hub, the hub
# unreachable and the model not cached, a wrong file): bad usage, the line
# says what to pass instead.
_USAGE_CLASSES = ("jax_dissect.clip.loading.ClipLoadError",
                  "jax_dissect.clip.siglip.load.SiglipLoadError",
                  "jax_dissect.models.convert.WeightsLoadError",
                  "jax_dissect.analyses.dnd.models.ModelLoadError")
# Bad input's classes that mean a failure while running.
_FAILURE_CLASSES = ("jax_dissect.store.integrity.DamagedEntryError",
                    "jax_dissect.runtime.distributed.PeerLostError")


def _is(error: BaseException, names: tuple[str, ...]) -> bool:
  return any(f"{c.__module__}.{c.__qualname__}" in names
             for c in type(error).__mro__)


def exit_code(error: BaseException) -> int:
  """The exit status of a command that stopped with `error`."""
  if isinstance(error, KeyboardInterrupt):
    return EXIT_INTERRUPTED
  if _is(error, _FAILURE_CLASSES):
    return EXIT_FAILED
  if isinstance(error, _usage_errors()) or _is(error, _USAGE_CLASSES):
    return EXIT_USAGE
  return EXIT_FAILED


def one_line(message: Any) -> str:
  """`message` on one line of at most MAX_LINE characters (with `error: `)."""
  text = " ".join(str(message).split())
  limit = MAX_LINE - len("error: ")
  return text if len(text) <= limit else text[:limit - 3] + "..."


def error_message(error: BaseException) -> str:
  """The one-line text of `error` (without `error: `)."""
  if isinstance(error, KeyboardInterrupt):
    return ("interrupted (Ctrl-C); files already written are whole, and "
            "finished cache shards are kept: run the command again to "
            "resume")
  text = str(error).strip()
  if (isinstance(error, _usage_errors()) or _is(error, _USAGE_CLASSES) or
      _is(error, _FAILURE_CLASSES) or
      isinstance(error, (RuntimeError, OSError, ImportError))):
    # The library's messages say what is wrong; absl's flag errors may span
    # lines (the last says it).
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    if len(lines) > 1 and type(error).__module__.startswith("absl"):
      text = lines[-1]
    return one_line(text or type(error).__name__)
  return one_line(f"{type(error).__name__}: {text} (a bug? run again with "
                  "--verbosity=1 for the traceback)")


# ----------------------------------------------------------------------------
# The status line.
# ----------------------------------------------------------------------------


def _seconds(s: float) -> str:
  if s < 60:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
  m, s = divmod(int(s), 60)
  if m < 60:
    return f"{m}:{s:02d} min"
  h, m = divmod(m, 60)
  return f"{h}:{m:02d}:{s:02d} h"


class ProgressDisplay:
  """Draws jax_dissect.runtime.progress on stderr.

  On a terminal: one status line redrawn in place (a bar with count,
  percent, rate and ETA; a running stage without a count shows its
  elapsed time), and a line for each finished stage longer than
  `min_stage_s` (for a count, `min_count_s`). Elsewhere (a log file): those lines, and a progress line
  at most every `every_s`.
  """

  def __init__(self, stream: TextIO | None = None,
               tty: bool | None = None, every_s: float = 30.0,
               min_stage_s: float = 5.0, redraw_s: float = 0.2,
               min_count_s: float = 2.0):
    self.stream = stream or sys.stderr
    self.tty = self.stream.isatty() if tty is None else tty
    self.every_s, self.min_stage_s, self.redraw_s = (every_s, min_stage_s,
                                                     redraw_s)
    self.min_count_s = min_count_s
    self._lock = threading.RLock()
    self._active: list[Any] = []  # Progress objects, outermost first.
    self._stages: list[tuple[str, float]] = []
    self._shown = False  # A status line is on screen.
    self._last_draw = 0.0
    self._last_line: dict[int, float] = {}
    self._ticker: threading.Thread | None = None
    self._counted = False  # The running stage printed a count's line.

  # -- what the library calls ----------------------------------------------

  def update(self, progress, final: bool) -> None:
    with self._lock:
      if progress not in self._active:
        self._active.append(progress)
      if final:
        index = self._active.index(progress)
        outermost = index == 0
        del self._active[index:]  # Inner counts end with it.
        if outermost and progress.elapsed >= self.min_count_s:
          self._print(self._final(progress))
          self._counted = True
        elif self.tty:
          self.clear()
        return
      now = time.perf_counter()
      if self.tty:
        if now - self._last_draw >= self.redraw_s:
          self._draw(self._bar(progress))
      elif (progress.done and
            now - self._last_line.get(id(progress), progress.start) >=
            self.every_s and not (progress.total and
                                  progress.done >= progress.total)):
        self._last_line[id(progress)] = now
        self._print(self._bar(progress, plain=True))

  def stage(self, name: str, done: bool, ok: bool = True) -> None:
    with self._lock:
      if not done:
        self._stages.append((name, time.perf_counter()))
        self._counted = False
        self._start_ticker()
        return
      start = next((t for n, t in reversed(self._stages) if n == name),
                   None)
      self._stages = [(n, t) for n, t in self._stages if n != name]
      self._active.clear()
      if start is not None:
        took = time.perf_counter() - start
        if ok and took >= self.min_stage_s and not self._counted:
          # (A stage whose count ended printed that line already.)
          self._print(f"{name}: done in {_seconds(took)}")
        if self.tty:
          self.clear()

  # -- drawing -------------------------------------------------------------

  def _bar(self, p, plain: bool = False) -> str:
    if not p.done and not plain:
      return f"{p.what}: starting ({_seconds(p.elapsed)})"
    rate = f"{p.rate:.1f}/s"
    if p.total:
      frac = min(p.done / p.total, 1.0)
      eta = p.eta
      tail = (f"{p.done}/{p.total} {100 * frac:3.0f}%  {rate}  ETA "
              f"{_seconds(eta) if eta is not None else '?'}")
      if plain:
        return f"{p.what}: {tail}"
      width = 24
      fill = int(round(frac * width))
      return f"{p.what}  [{'#' * fill}{'.' * (width - fill)}]  {tail}"
    return f"{p.what}: {p.done}  {rate}"

  def _final(self, p) -> str:
    count = f"{p.done}" if not p.total else f"{p.done}/{p.total}"
    return f"{p.what}: {count} in {_seconds(p.elapsed)} ({p.rate:.1f}/s)"

  def _status(self) -> str | None:
    if self._active:
      return self._bar(self._active[-1])
    if self._stages:
      name, start = self._stages[-1]
      took = time.perf_counter() - start
      if took >= 1.0:
        return f"{name}  {_seconds(took)}"
    return None

  def _fit(self, line: str) -> str:
    width = shutil.get_terminal_size((100, 20)).columns - 1
    return line if len(line) <= width else line[:max(width - 3, 1)] + "..."

  def _draw(self, line: str) -> None:
    self._last_draw = time.perf_counter()
    self.stream.write("\r\x1b[K" + self._fit(line))
    self.stream.flush()
    self._shown = True

  def clear(self) -> None:
    """Removes the status line (before other output)."""
    with self._lock:
      if self._shown:
        self.stream.write("\r\x1b[K")
        self.stream.flush()
        self._shown = False

  def _print(self, line: str) -> None:
    self.clear()
    self.stream.write(line + "\n")
    self.stream.flush()

  def _start_ticker(self) -> None:
    if not self.tty or self._ticker is not None:
      return

    def tick():
      while True:
        time.sleep(self.redraw_s)
        with self._lock:
          status = self._status()
          if status and time.perf_counter() - self._last_draw >= (
              self.redraw_s):
            self._draw(status)

    self._ticker = threading.Thread(target=tick, daemon=True,
                                    name="jax_dissect-progress")
    self._ticker.start()


# ----------------------------------------------------------------------------
# Logging.
# ----------------------------------------------------------------------------


class _QuietHandler(py_logging.Handler):
  """The quiet mode's log output: the package's own warnings and every
  library's errors, as `warning: ...` / `error: ...` lines."""

  def __init__(self, display: ProgressDisplay | None):
    super().__init__(py_logging.WARNING)
    self.display = display
    self.seen: set[str] = set()  # Each message once.

  def emit(self, record: py_logging.LogRecord) -> None:
    ours = os.path.abspath(record.pathname).startswith(_PACKAGE_DIR)
    if record.levelno < (py_logging.WARNING if ours else py_logging.ERROR):
      return
    try:
      text = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      text = str(record.msg)
    kind = "warning" if record.levelno < py_logging.ERROR else "error"
    if text in self.seen:
      return
    self.seen.add(text)
    if self.display is not None:
      self.display.clear()
    sys.stderr.write(f"{kind}: {text}\n")
    sys.stderr.flush()


_STATE: dict[str, Any] = {"verbose": False, "verbosity": -1,
                          "display": None}


def verbose() -> bool:
  """Whether the command shows every log line (--verbosity given)."""
  return _STATE["verbose"]


def quiet_environment() -> None:
  """Environment variables that keep libraries quiet; set before they are
  imported (a value the user set is kept)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def setup_output(argv: list[str]) -> None:
  """Sets up logging and progress once flags are parsed.

  Quiet unless --verbosity (or --logtostderr/--alsologtostderr) is on the
  command line: then absl's log lines at that verbosity, as absl apps
  print them.
  """
  import warnings  # pylint: disable=g-import-not-at-top

  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  from jax_dissect.runtime import progress  # pylint: disable=g-import-not-at-top
  del argv
  flag_values = flags.FLAGS
  given = lambda name: name in flag_values and flag_values[name].present
  verbose_mode = (given("verbosity") or given("v") or given("logtostderr")
                  or given("alsologtostderr"))
  _STATE["verbose"] = verbose_mode
  if verbose_mode:
    if not given("verbosity") and not given("v"):
      flag_values.verbosity = 0
    _STATE["verbosity"] = flag_values.verbosity
    logging.use_absl_handler()
    progress.set_display(None)
    return
  _STATE["verbosity"] = -1
  quiet_environment()
  warnings.simplefilter("ignore")
  display = ProgressDisplay()
  _STATE["display"] = display
  progress.set_display(display)
  root = py_logging.getLogger()
  for h in list(root.handlers):
    root.removeHandler(h)
  root.addHandler(_QuietHandler(display))
  root.setLevel(py_logging.WARNING)
  logging.set_verbosity(logging.WARNING)
  absl_logger = py_logging.getLogger("absl")
  absl_logger.propagate = True
  for h in list(absl_logger.handlers):
    absl_logger.removeHandler(h)
  # Libraries with their own handlers.
  for name in ("transformers", "tensorflow", "jax", "orbax", "urllib3",
               "huggingface_hub", "filelock", "matplotlib", "PIL"):
    lib = py_logging.getLogger(name)
    lib.setLevel(py_logging.ERROR)
    for h in list(lib.handlers):
      lib.removeHandler(h)
    lib.propagate = True


def print_error(message: str) -> None:
  """Prints `error: message` (one line) on stderr."""
  display = _STATE["display"]
  if display is not None:
    display.clear()
  sys.stdout.flush()
  sys.stderr.write(f"error: {one_line(message)}\n")
  sys.stderr.flush()


def fail(error: BaseException, *, hard: bool = False) -> NoReturn:
  """Ends the command for `error`: one line, its exit status.

  Args:
    error: what stopped the command.
    hard: exit at once (os._exit), skipping interpreter shutdown: a
      multi-process run (the runtime's shutdown waits for the other
      processes) or Ctrl-C (threads decoding ahead are not waited for).
  """
  code = exit_code(error)
  if _STATE["verbosity"] >= 1 and not isinstance(error, KeyboardInterrupt):
    traceback.print_exception(error, file=sys.stderr)
  print_error(error_message(error))
  if hard or code == EXIT_INTERRUPTED:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def guarded(fn: Callable[[], Any], *, hard: Callable[[], bool] = lambda: False
            ) -> NoReturn:
  """Runs fn(); every way out is an exit status, errors one line each."""
  try:
    fn()
  except SystemExit as e:
    if isinstance(e.code, str):  # sys.exit("message") somewhere below.
      text = e.code[len("error: "):] if e.code.startswith("error: ") else (
          e.code)
      print_error(text)
      sys.exit(EXIT_FAILED)
    raise
  except KeyboardInterrupt as e:
    fail(e)
  except BrokenPipeError:  # The reader of stdout went away (| head).
    os._exit(EXIT_FAILED)  # pylint: disable=protected-access
  except Exception as e:  # pylint: disable=broad-except
    fail(e, hard=hard())
  sys.stdout.flush()
  sys.exit(EXIT_OK)
