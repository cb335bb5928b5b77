"""What every entry point shares: where flags are declared, flag parsing,
the process environment set before the library loads transformers, and
the check that the Hugging Face hub can be reached."""

from __future__ import annotations

from collections.abc import Callable, Iterable
import functools
import os
import re
import sys
import threading
import time

from jax_dissect.commands import console
from jax_dissect.commands import help as help_lib

FLAG_MODULE = help_lib.FLAG_MODULE
# Errors that mean bad input (flags, files, missing extras).
USER_ERRORS = (ValueError, OSError, ImportError)
# A hub repo id: owner/name.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# How long the hub may take to answer before it counts as unreachable.
HUB_PROBE_S = 3.0


def run_command(define_flags, main, argv: list[str] | None = None) -> None:
  """Runs a command: declares its flags, parses argv (sys.argv by default),
  sets up the output and calls main(argv) under console.guarded (one-line
  errors and the exit statuses of docs/cli.md)."""
  argv = list(sys.argv if argv is None else argv)

  def go():
    define_flags()
    parse_flags(argv)
    console.setup_output(argv)
    main(argv)

  console.guarded(go)


def enable_compilation_cache(cache_root: Callable[[], str]) -> None:
  """Keeps compiled programs under the folder cache_root() names
  (runtime.compilation_cache), when that folder can be made. Where it
  cannot, the command's own checks of the folder give the one-line error,
  so here it only means running without the compilation cache."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from jax_dissect.runtime import compilation_cache  # pylint: disable=g-import-not-at-top
  try:
    compilation_cache.enable(cache_root())
  except (ValueError, OSError) as e:
    logging.info("no compilation cache: %s", e)


def define_once(define: Callable[[], None]) -> Callable[[], None]:
  """A command's `define_flags` that declares its flags only on the first
  call (the commands share one flag registry; help and run both call it)."""
  done = []

  @functools.wraps(define)
  def define_flags() -> None:
    if not done:
      done.append(True)
      define()

  return define_flags


def flag_table_definer(table):
  """The `define_flags()` of a command whose flags are `table`.

  Args:
    table: (kind, name, default, help) rows; kind is an absl DEFINE_ suffix
      ("string", "integer", "list", ...).

  Returns:
    A function that declares the flags once, when the command runs or shows
    its help.
  """

  @define_once
  def define_flags() -> None:
    from absl import flags  # pylint: disable=g-import-not-at-top
    for kind, name, default, text in table:
      getattr(flags, f"DEFINE_{kind}")(name, default, text,
                                       module_name=FLAG_MODULE)

  return define_flags


def flag_module() -> str:
  """The module name the commands declare their flags under (help lists
  the flags declared under it)."""
  return FLAG_MODULE


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag is a console.UsageError (exit 2)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    raise console.UsageError(lines[-1] if lines else str(e)) from None
  if len(rest) > 1:
    raise console.UsageError(
        f"unexpected arguments {rest[1:]}: every option is a --flag=value "
        f"(see {os.path.basename(argv[0])} --help)")
  return rest


def setup_environment(needs_torch: bool = False) -> None:
  """What the entry points set before the library loads transformers.

  USE_TORCH=0 keeps transformers from importing PyTorch (seconds, and
  nothing jax_dissect needs) unless the command needs it (a
  sentence-transformers model); a value the user set is kept.
  """
  os.environ.setdefault("USE_TORCH", "1" if needs_torch else "0")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def one_line_errors(main):
  """Kept for callers of 0.2's API: console.guarded does this now."""
  return main


# ----------------------------------------------------------------------------
# The Hugging Face hub.
# ----------------------------------------------------------------------------


def hub_ids(values: Iterable[object]) -> list[str]:
  """The values that name a hub repo (owner/name, not a local path)."""
  out = []
  for v in values:
    if (isinstance(v, str) and _HUB_ID.match(v) and
        not os.path.exists(os.path.expanduser(v))):
      out.append(v)
  return out


def hub_reachable(timeout_s: float = HUB_PROBE_S) -> bool:
  """Whether the hub (HF_ENDPOINT, through HTTPS_PROXY if set) answers an
  HTTP request within `timeout_s`: any answer counts, none (no network, a
  resolver that hangs, a firewall that drops, a proxy that never answers)
  is unreachable. The request runs in a thread, so nothing takes longer
  than `timeout_s`."""
  from urllib import error as url_error  # pylint: disable=g-import-not-at-top
  from urllib import request as url_request  # pylint: disable=g-import-not-at-top
  url = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
  result: dict[str, bool] = {}

  def probe():
    try:
      with url_request.urlopen(url_request.Request(url, method="HEAD"),
                               timeout=timeout_s):
        result["ok"] = True
    except url_error.HTTPError:
      result["ok"] = True  # It answered (401, 404...).
    except Exception:  # pylint: disable=broad-except
      result["ok"] = False  # URLError, timeout, TLS, reset...

  thread = threading.Thread(target=probe, daemon=True,
                            name="jax_dissect-hub-probe")
  thread.start()
  thread.join(timeout_s)
  return result.get("ok", False)


# What to pass instead of a hub id that cannot be fetched, by option.
_OFFLINE_HINTS = {
    "clip_model": "pass --clip_model=DIR, a CLIP model and tokenizer saved "
                  "with save_pretrained on a machine online (docs/cli.md)",
    "target_weights": "pass --target_weights=FILE (.safetensors/.pth, or "
                      "a jax-dissect convert checkpoint) or random",
    "target_model": "pass --target_weights=DIR, a local copy with "
                    "config.json and weights",
}


def offline_message(error: BaseException, named: dict[str, str]
                    ) -> str | None:
  """One line for a model that could not be fetched while the hub is
  unreachable: which option named it and what to pass instead; None if
  `error` is not about one of the hub ids `named` ({option: id})."""
  text = str(error)
  for option, repo in named.items():
    if repo and repo in text:
      hint = _OFFLINE_HINTS.get(
          option, f"pass --{option}=DIR, a local copy of the model")
      return (f"--{option}={repo}: the Hugging Face hub cannot be reached "
              f"and it is not in the local cache; {hint}")
  return None


def prepare_hub(names: Iterable[object]) -> bool:
  """Before loading models: if any of `names` is a hub id and the hub
  cannot be reached, switch the Hugging Face libraries to offline mode
  (HF_HUB_OFFLINE=1), so a model that is not in the local cache fails at
  once, with the library's one line saying what to pass instead, rather
  than after a minute of retries; cached models still load.

  Returns:
    False if the hub was found unreachable.
  """
  if os.environ.get("HF_HUB_OFFLINE") or not hub_ids(names):
    return True
  start = time.perf_counter()
  if hub_reachable():
    return True
  os.environ["HF_HUB_OFFLINE"] = "1"
  hub = sys.modules.get("huggingface_hub.constants")
  if hub is not None:  # Imported already: it read the variable then.
    hub.HF_HUB_OFFLINE = True
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.info("the Hugging Face hub is unreachable (%.1f s): offline mode, "
               "local cache only", time.perf_counter() - start)
  return False
