"""`--help` of every command, in well under 2 s (no jax, flax or
transformers on its path).

A command's flags are declared by its module, and the analyses' options
by their get_config(): importing either imports jax (seconds). So the help
texts are read from help_index.json, written beside this module by
`python scripts/update_help_index.py`, which holds each command's flags and
the SHA-256 of the source files they come from (`SOURCES`). Help checks
those digests (milliseconds); a command whose sources changed since the
index was written (or that it lacks, e.g. a new analysis) gets its help
from the modules themselves: right, only slower. tests/commands checks that
the shipped index is up to date.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import json
import os
import re
import sys
import textwrap
from typing import Any

# The package directory and the index file.
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INDEX = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     "help_index.json")
# absl's module name of every command's flags (one command per process).
FLAG_MODULE = "jax_dissect.commands"
HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")

# One line per command, for `jax-dissect --help`.
COMMANDS = {
    "describe": "Label every neuron of chosen layers with a concept (CLIP-"
                "Dissect); writes a results directory.",
    "analyze": "Run one analysis of a results directory (--analysis=NAME; "
               "or use the analysis' name as the command).",
    "report": "Write the HTML report of a results directory (open it in "
              "any browser).",
    "convert": "Convert torchvision ResNet weights to a Flax checkpoint.",
    "compare": "Put two or more runs side by side (profiles, label "
               "agreement, matched neurons) or a series of checkpoints "
               "as a trend; writes tables, charts and compare.html.",
    "reproduce": "Rerun a paper's table (CLIP-Dissect Tables 1-3, the "
                 "stability paper's, the profiling paper's figures) with "
                 "the published numbers beside ours.",
    "series": "describe over a series of checkpoints (a list of weights "
              "or an orbax directory of steps), CLIP computed once.",
}
EXIT_STATUS = ("exit status: 0 done, 1 failed while running, 2 bad usage "
               "(the error line says what to pass), 130 interrupted")
OUTPUT = ("output: quiet by default (warnings, errors, progress); "
          "--verbosity=0 shows every log line, --verbosity=1 also debug "
          "lines and a failure's traceback")

# Source files (relative to the package) each command's help comes from.
_COMMON = ("commands/common.py", "commands/help.py")
SOURCES = {
    "describe": (*_COMMON, "commands/describe.py", "pipeline/config.py",
                 "configs/__init__.py"),
    "analyze": (*_COMMON, "commands/analyze.py", "analyses/__init__.py"),
    "report": (*_COMMON, "commands/report.py"),
    "convert": (*_COMMON, "commands/convert.py", "models/registry.py"),
    "compare": (*_COMMON, "commands/compare.py"),
    "reproduce": (*_COMMON, "commands/reproduce.py"),
    "series": (*_COMMON, "commands/series.py", "commands/describe.py",
               "pipeline/config.py", "configs/__init__.py"),
}


def is_help(args: list[str]) -> bool:
  """Whether the arguments ask for help (before any `--`)."""
  for arg in args:
    if arg == "--":
      return False
    if arg in HELP_ARGS or arg.split("=")[0] in ("--help", "--helpfull"):
      return True
  return False


def analysis_names() -> list[str]:
  """The analyses (their folders; nothing is imported)."""
  folder = os.path.join(PACKAGE, "analyses")
  return sorted(n for n in os.listdir(folder)
                if not n.startswith(("_", ".")) and
                os.path.isfile(os.path.join(folder, n, "__init__.py")))


def analysis_description(name: str) -> str:
  """An analysis' DESCRIPTION, read from its source (not imported): its
  __init__.py, or the module of the package it imports DESCRIPTION from."""
  return _constant(os.path.join(PACKAGE, "analyses", name, "__init__.py"),
                   "DESCRIPTION", depth=2)


def _constant(path: str, name: str, depth: int) -> str:
  """The string constant `name` of the module at `path` (following one
  `from jax_dissect.analyses.<x>.<module> import name` within the package)."""
  try:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
  except (OSError, SyntaxError):
    return ""
  for node in tree.body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
        isinstance(node.targets[0], ast.Name) and node.targets[0].id == name):
      try:
        return " ".join(str(ast.literal_eval(node.value)).split())
      except ValueError:
        return ""
    if (depth > 1 and isinstance(node, ast.ImportFrom) and node.module and
        node.module.startswith("jax_dissect.analyses.") and
        any(a.name == name and a.asname is None for a in node.names)):
      parts = node.module.split(".")[1:]
      return _constant(os.path.join(PACKAGE, *parts) + ".py", name,
                       depth - 1)
  return ""


def _sources(key: str) -> list[str]:
  if key.startswith("analysis:"):
    name = key.split(":", 1)[1]
    folder = os.path.join("analyses", name)
    files = sorted(
        os.path.relpath(os.path.join(d, f), PACKAGE)
        for d, _, fs in os.walk(os.path.join(PACKAGE, folder)) for f in fs
        if f.endswith(".py"))
    return [*SOURCES["analyze"], "clip/text_embed.py", *files]
  return list(SOURCES[key])


def digest(key: str) -> str:
  """SHA-256 of the sources of `key`'s help (and the package version)."""
  import jax_dissect  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256(jax_dissect.__version__.encode())
  for rel in _sources(key):
    h.update(rel.encode())
    try:
      with open(os.path.join(PACKAGE, rel), "rb") as f:
        h.update(f.read())
    except OSError:
      h.update(b"<missing>")
  return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, Any]:
  try:
    with open(INDEX, encoding="utf-8") as f:
      return json.load(f).get("commands", {})
  except (OSError, ValueError):
    return {}


def indexed(key: str) -> dict[str, Any] | None:
  """`key`'s spec from the index if its sources are unchanged, else None."""
  spec = _index().get(key)
  if spec is None or spec.get("digest") != digest(key):
    return None
  return spec


# ----------------------------------------------------------------------------
# Specs from the modules themselves.
# ----------------------------------------------------------------------------


def _default_text(flag) -> str | None:
  value = flag.default
  if value is None:
    return None
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return ",".join(map(str, value))
  return str(value)


def flag_specs(module_name: str = FLAG_MODULE) -> list[dict[str, Any]]:
  """The flags declared under `module_name`, as help needs them."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  out = []
  for flag in sorted(flags.FLAGS.get_flags_for_module(module_name),
                     key=lambda f: f.name):
    kind = flag.flag_type()
    values = getattr(flag.parser, "enum_values", None)
    out.append({"name": flag.name, "help": " ".join(str(flag.help).split()),
                "default": _default_text(flag),
                "bool": bool(getattr(flag, "boolean", False)),
                "kind": kind, "values": list(values) if values else None})
  return out


def live_spec(key: str) -> dict[str, Any]:
  """`key`'s help spec from its modules (imports them: seconds)."""
  if key.startswith("analysis:"):
    name = key.split(":", 1)[1]
    module = importlib.import_module("jax_dissect.commands.analyze")
    module.define_flags(name, fixed=True)
    analysis = importlib.import_module(f"jax_dissect.analyses.{name}")
    return {"summary": " ".join(analysis.DESCRIPTION.split()),
            "doc": _doc(analysis), "flags": flag_specs(),
            "notes": module.help_notes(name)}
  module = importlib.import_module(f"jax_dissect.commands.{key}")
  module.define_flags()
  return {"summary": COMMANDS[key], "doc": _doc(module), "flags": flag_specs(),
          "notes": module.help_notes()}


# Scripts of scripts/ -> their command, for examples in docstrings.
_SCRIPT_COMMANDS = {
    "describe_neurons": "describe", "make_report": "report",
    "convert_torchvision": "convert", "analyze": "analyze",
    "evaluate": "evaluate", "stability": "stability",
    "profile_layers": "profile", "score_explanations": "scoring",
    "compositional": "compositional", "weight_analysis": "weights",
    "linear_explanations": "linear_explanations",
    "describe_and_dissect": "dnd"}


def _example(line: str) -> str:
  """An example command line as `jax-dissect ...`."""
  line = " ".join(line.split())
  match = re.match(r"^python scripts/(\w+)\.py(.*)$", line)
  if match and match.group(1) in _SCRIPT_COMMANDS:
    command, rest = _SCRIPT_COMMANDS[match.group(1)], match.group(2)
    analysis = re.match(r"^ --analysis=(\w+)(.*)$", rest)
    if command == "analyze" and analysis:
      command, rest = analysis.group(1), analysis.group(2)
    line = f"jax-dissect {command}{rest}"
  return line


def _doc(module) -> str:
  """The usage examples of a module's docstring (its indented paragraphs
  after the first), as jax-dissect command lines."""
  doc = (module.__doc__ or "").strip("\n")
  parts = doc.split("\n\n")
  examples = [p for p in parts[1:] if p.startswith("  ")]
  lines = []
  for p in examples[:1]:
    text = textwrap.dedent(p).replace("\\\n", " ")
    lines += [_example(l) for l in text.splitlines() if l.strip()]
  return "\n".join(lines)


def spec(key: str) -> dict[str, Any]:
  """`key`'s help spec: from the index when fresh, else from the modules."""
  return indexed(key) or live_spec(key)


# ----------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------


def _flag_line(f: dict[str, Any]) -> tuple[str, str]:
  if f["bool"]:
    name = f"--[no]{f['name']}"
  elif f.get("values"):
    name = f"--{f['name']}={'|'.join(f['values'])}"
  else:
    kind = f["kind"]
    name = f"--{f['name']}=" + ("A,B,..." if "list" in kind else
                                {"int": "INT", "float": "FLOAT"}.get(
                                    kind, "VALUE"))
  text = f["help"]
  if f["default"] not in (None, "") and "default" not in text.lower():
    text += f" (default: {f['default']})"
  return name, text


def render(prog: str, s: dict[str, Any]) -> str:
  """The help text of a command."""
  width = 79
  lines = [f"usage: {prog} [flags]", ""]
  lines += textwrap.wrap(s["summary"], width)
  if s.get("doc"):
    lines += ["", "examples:"]
    lines += ["  " + l if l else "" for l in s["doc"].splitlines()]
  lines += ["", "flags:"]
  for f in s["flags"]:
    name, text = _flag_line(f)
    lines.append(f"  {name}")
    lines += textwrap.wrap(text, width, initial_indent=" " * 6,
                           subsequent_indent=" " * 6)
  for note in s.get("notes") or ():
    lines.append("")
    lines += textwrap.wrap(note, width)
  lines += [""] + textwrap.wrap(OUTPUT, width, subsequent_indent="  ")
  lines += textwrap.wrap(EXIT_STATUS, width, subsequent_indent="  ")
  return "\n".join(lines) + "\n"


def command_help(key: str, prog: str) -> str:
  """The help text of command `key` ("describe", "analysis:stability"...)."""
  return render(prog, spec(key))


def top_help(prog: str = "jax-dissect") -> str:
  """`jax-dissect --help`: every command and analysis with one line."""
  rows = list(COMMANDS.items())
  rows += [(n, analysis_description(n)) for n in analysis_names()]
  width = max(len(n) for n, _ in rows) + 2
  lines = [f"usage: {prog} COMMAND [flags]   ({prog} COMMAND --help: its "
           "flags)", "", "commands:"]
  for name, text in rows[:len(COMMANDS)]:
    lines += textwrap.wrap(text, 79, initial_indent=f"  {name:<{width}}",
                           subsequent_indent=" " * (width + 2))
  lines += ["", "analyses (each a command; the same as analyze "
            "--analysis=NAME):"]
  for name, text in rows[len(COMMANDS):]:
    lines += textwrap.wrap(text or "-", 79,
                           initial_indent=f"  {name:<{width}}",
                           subsequent_indent=" " * (width + 2))
  lines += ["", f"  {prog} describe --config=resnet18_cifar100:smoke "
            "--result_dir=results/smoke",
            f"  {prog} report --results_dir=results/smoke", ""]
  lines += textwrap.wrap(OUTPUT, 79, subsequent_indent="  ")
  lines += textwrap.wrap(EXIT_STATUS, 79, subsequent_indent="  ")
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# The index.
# ----------------------------------------------------------------------------


def keys() -> list[str]:
  """Every command whose help the index holds."""
  return list(COMMANDS) + [f"analysis:{n}" for n in analysis_names()]


def build_index() -> dict[str, Any]:
  """Every command's live spec, each collected in a fresh interpreter (the
  commands' flags cannot share one)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  out = {}
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  root = os.path.dirname(PACKAGE)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (root, env.get("PYTHONPATH")) if p)
  for key in keys():
    code = ("import json, sys\n"
            "from jax_dissect.commands import help as h\n"
            f"s = h.live_spec({key!r})\n"
            f"s['digest'] = h.digest({key!r})\n"
            "sys.stdout.write(json.dumps(s))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=env, check=False, timeout=300)
    if proc.returncode:
      raise RuntimeError(f"help of {key}: {proc.stderr[-2000:]}")
    out[key] = json.loads(proc.stdout)
  return {"format": 1, "commands": out}


def write_index(path: str = INDEX) -> str:
  """Writes the index (scripts/update_help_index.py)."""
  data = build_index()
  with open(path, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=1, sort_keys=True)
    f.write("\n")
  return path
