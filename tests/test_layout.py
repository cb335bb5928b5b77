"""The package's shape: no import cycles, dependencies point down, one home
per analysis, no benchmark code in the wheel (docs/design.md, "Layout")."""

import ast
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests import helpers

PACKAGE = os.path.join(helpers.REPO, "jax_dissect")

# The subpackages from the bottom up: a module may import modules of its
# own subpackage and of those listed before it, never of those after it.
LAYERS = ("runtime", "similarity", "store", "data", "clip", "models",
          "analyses", "pipeline", "configs", "report", "commands")

# Imports of the package's own modules inside functions, each with its
# reason; any other import of jax_dissect inside a function is an error.
LAZY_IMPORTS = {
    # `import jax_dissect` stays cheap; the layer-capture API loads on use.
    ("jax_dissect", "jax_dissect.models.capture"): "start-up",
    # Hugging Face targets import transformers: only when one is used.
    ("jax_dissect.models.registry", "jax_dissect.models.hf"): "transformers",
    # Text embedders are named by flags of every analysis command; CLIP's
    # embedder (jax, PIL, transformers) loads only when one is built.
    ("jax_dissect.clip.text_embed", "jax_dissect.clip.embedder"): "start-up",
}


def _modules(root=PACKAGE, package="jax_dissect"):
  """{dotted name: path} of every module of the package."""
  out = {}
  for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
    rel = os.path.relpath(path, os.path.dirname(root))[:-3].split(os.sep)
    if rel[-1] == "__init__":
      rel = rel[:-1]
    out[".".join(rel)] = path
  assert package in out
  return out


def _imports(modules):
  """[(importer, imported module, inside a function?)] for every import of
  the package's own modules, wherever it is (functions, TYPE_CHECKING)."""
  edges = []
  for name, path in modules.items():
    is_package = path.endswith("__init__.py")
    tree = ast.parse(open(path, encoding="utf-8").read(), path)

    def visit(node, in_function, name=name, is_package=is_package):
      for child in ast.iter_child_nodes(node):
        inner = in_function or isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        targets = []
        if isinstance(child, ast.Import):
          targets = [a.name for a in child.names]
        elif isinstance(child, ast.ImportFrom):
          base = child.module or ""
          if child.level:
            parts = name.split(".") if is_package else name.split(".")[:-1]
            parts = parts[:len(parts) - child.level + 1]
            base = ".".join(parts + ([base] if base else []))
          targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules
                     else base for a in child.names]
        for target in targets:
          if target.split(".")[0] == "jax_dissect":
            assert target in modules, f"{name} imports unknown {target}"
            edges.append((name, target, in_function))
        visit(child, inner)

    visit(tree, False)
  return edges


def _cycles(nodes, edges):
  """Strongly connected components with more than one module (Tarjan)."""
  graph = {n: set() for n in nodes}
  for a, b, _ in edges:
    if a != b:
      graph[a].add(b)
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def connect(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
  for v in sorted(graph):
    if v not in index:
      connect(v)
  return out


def _layer(module):
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


def test_no_import_cycles():
  modules = _modules()
  assert _cycles(modules, _imports(modules)) == []


def test_cycle_finder_finds_a_cycle_through_a_function(tmp_path):
  """The check above can fail: a cycle closed by an import inside a
  function (the kind the old similarity <-> sharding pair was) is found."""
  pkg = tmp_path / "jax_dissect"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "sub" / "a.py").write_text("from jax_dissect.sub import b\n")
  (pkg / "sub" / "b.py").write_text(
      "def f():\n  from jax_dissect.sub import a\n  return a\n")
  (pkg / "c.py").write_text("from . import sub\n")
  modules = _modules(str(pkg))
  edges = _imports(modules)
  assert ("jax_dissect.sub.b", "jax_dissect.sub.a", True) in edges
  assert _cycles(modules, edges) == [["jax_dissect.sub.a",
                                      "jax_dissect.sub.b"]]


def test_dependencies_point_down():
  modules = _modules()
  wrong = []
  for a, b, _ in _imports(modules):
    la, lb = _layer(a), _layer(b)
    if lb is None or la == lb or la in (None, "__main__"):
      continue  # The package root (its version) and its own subpackage.
    assert la in LAYERS, f"{a}: subpackage {la} is not in LAYERS"
    assert lb in LAYERS, f"{b}: subpackage {lb} is not in LAYERS"
    if LAYERS.index(lb) > LAYERS.index(la):
      wrong.append(f"{a} -> {b}")
  assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_imports_inside_functions_have_a_reason():
  modules = _modules()
  lazy = {(a, b) for a, b, inner in _imports(modules) if inner and
          _layer(a) != "commands"}  # Subcommands load on use (start-up).
  assert lazy - set(LAZY_IMPORTS) == set(), (
      "import these at the top of the module, or add a reason to "
      "LAZY_IMPORTS")


def test_each_analysis_has_one_home():
  """analyses/<name>/ holds an analysis; no other module or package of
  jax_dissect is named like one (jax_dissect.features is an alias of the
  features analysis's library, not a module of its own)."""
  modules = _modules()
  analyses = {m.split(".")[2] for m in modules
              if m.startswith("jax_dissect.analyses.") and
              os.path.isdir(os.path.join(PACKAGE, "analyses", m.split(".")[2]))}
  assert {"dnd", "scoring", "profile", "stability"} <= analyses
  for name in modules:
    parts = name.split(".")
    inside = len(parts) > 2 and parts[1] == "analyses"
    for part in parts[1:]:
      if part in analyses and not inside:
        pytest.fail(f"{name} repeats analysis {part!r}")
      if inside and part in analyses and part != parts[2]:
        pytest.fail(f"{name} repeats analysis {part!r} outside its home")


def test_no_analysis_is_a_plain_module():
  top = [f for f in os.listdir(os.path.join(PACKAGE, "analyses"))
         if f.endswith(".py") and f != "__init__.py"]
  assert top == []


def test_old_module_paths_say_where_they_went():
  code = ("import importlib\n"
          "for old in ('jax_dissect.cache', 'jax_dissect.significance',\n"
          "            'jax_dissect.dnd.run'):\n"
          "  try:\n"
          "    importlib.import_module(old)\n"
          "  except ImportError as e:\n"
          "    print(e)\n"
          "from jax_dissect import results\n"
          "from jax_dissect.store import results as new\n"
          "print(results is new)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True, cwd=helpers.REPO).stdout
  lines = out.splitlines()
  assert "jax_dissect.cache moved to jax_dissect.store.cache" in lines[0]
  assert "moved to jax_dissect.analyses.scoring" in lines[1]
  assert "jax_dissect.dnd moved to jax_dissect.analyses.dnd" in lines[2]
  assert lines[3] == "True"


def test_wheel_holds_the_library_only(tmp_path):
  """`pip install .` installs jax_dissect with the report's page files, and
  no benchmark, PyTorch reference or test code."""
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "jax_dissect", "benchmarks",
               "torch_reference", "scripts", "configs"):
    path = os.path.join(helpers.REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(
          "__pycache__"))
    else:
      shutil.copy(path, src / name)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                  "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                  str(src)], check=True, capture_output=True, timeout=300)
  (wheel,) = glob.glob(str(tmp_path / "dist" / "*.whl"))
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split("/")[0] for n in names}
  assert {t for t in tops if not t.endswith(".dist-info")} == {"jax_dissect"}
  assert not [n for n in names if "benchmark" in n or "torch_reference" in n]
  for asset in ("template.html", "report.css", "report.js"):
    assert f"jax_dissect/report/{asset}" in names
  assert "jax_dissect/similarity/runner.py" in names
