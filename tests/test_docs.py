"""Every code block of README.md and docs/*.md runs as written.

A fenced block is one of:
  ```python        run as a script (cwd: a scratch copy of the repository);
  ```bash / ```sh  run with `bash -e -o pipefail`, same directory;
  ```text / json   shown output or file contents: not run.
A runnable block right after the line `<!-- not run: REASON -->` is not
run; the reason must say why (it needs the network, hub weights, a data set
or a GPU, it takes too long here, ...). The blocks of one file run in
order, so a block may use what an earlier one wrote (two files run at a
time); all files share one scratch copy of the repository in which the
README's smoke run (results/smoke) has already been made, and `python` on
PATH is this interpreter. The hub is switched off (HF_HUB_OFFLINE=1): a block that would
download fails here instead.
"""

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys

import pytest

from configs import shared_data
from tests import helpers

REPO = helpers.REPO
DOC_FILES = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs"))
    if f.endswith(".md"))
RUN_LANGUAGES = ("python", "bash", "sh")
SHOWN_LANGUAGES = ("text", "json")
SKIP = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
# The README's two set-up commands, exactly (a fresh clone runs them).
SETUP_COMMANDS = (
    "python3.11 -m venv .venv && .venv/bin/pip install -q -e . && "
    ".venv/bin/python scripts/describe_neurons.py "
    "--config=configs/resnet18_cifar100.py:smoke --result_dir=results/smoke",
    "python3.11 -m venv .venv && .venv/bin/pip install -q -e "
    "'.[test,torch,sentence]' && .venv/bin/python -m pytest -q tests",
)
README_MAX_BYTES = 12_000
SMOKE = ("scripts/describe_neurons.py",
         "--config=configs/resnet18_cifar100.py:smoke",
         "--result_dir=results/smoke")


class Block:
  """One fenced code block of a document."""

  def __init__(self, path, line, language, code, skip_reason):
    self.path, self.line, self.language = path, line, language
    self.code, self.skip_reason = code, skip_reason

  @property
  def name(self):
    return f"{self.path}:{self.line}"


def read_blocks(path):
  """The fenced blocks of `path` (relative to the repository), in order."""
  with open(os.path.join(REPO, path), encoding="utf-8") as f:
    lines = f.read().splitlines()
  blocks, i = [], 0
  while i < len(lines):
    match = FENCE.match(lines[i])
    if not match:
      assert not lines[i].lstrip().startswith("```"), (
          f"{path}:{i + 1}: an indented fence (write blocks at column 0)")
      i += 1
      continue
    start = i
    j = i + 1
    while j < len(lines) and lines[j].rstrip() != "```":
      j += 1
    assert j < len(lines), f"{path}:{start + 1}: fence never closed"
    previous = next((lines[k] for k in range(start - 1, -1, -1)
                     if lines[k].strip()), "")
    skip = SKIP.match(previous)
    blocks.append(Block(path, start + 1, match.group(1),
                        "\n".join(lines[start + 1:j]) + "\n",
                        skip.group(1) if skip else None))
    i = j + 1
  return blocks


ALL_BLOCKS = [b for path in DOC_FILES for b in read_blocks(path)]
RUN_BLOCKS = [b for b in ALL_BLOCKS
              if b.language in RUN_LANGUAGES and b.skip_reason is None]


def test_blocks_have_known_languages_and_skips_have_reasons():
  for block in ALL_BLOCKS:
    assert block.language in RUN_LANGUAGES + SHOWN_LANGUAGES, (
        f"{block.name}: block language {block.language!r}; use one of "
        f"{RUN_LANGUAGES + SHOWN_LANGUAGES}")
    if block.skip_reason is not None:
      assert block.language in RUN_LANGUAGES, (
          f"{block.name}: a 'not run' marker before a {block.language} block")
      assert len(block.skip_reason) >= 10, (
          f"{block.name}: 'not run' needs a reason; got "
          f"{block.skip_reason!r}")
  # Markers are only ever read right before a fence.
  for path in DOC_FILES:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
      lines = f.read().splitlines()
    for i, line in enumerate(lines):
      if "not run:" in line and line.startswith("<!--"):
        after = next((l for l in lines[i + 1:] if l.strip()), "")
        assert FENCE.match(after), f"{path}:{i + 1}: marker not before a block"
  assert len(RUN_BLOCKS) >= 10


def test_readme_is_a_front_page():
  with open(os.path.join(REPO, "README.md"), "rb") as f:
    text = f.read()
  assert len(text) <= README_MAX_BYTES, len(text)
  readme = text.decode("utf-8")
  first = read_blocks("README.md")[0]
  commands = [l for l in first.code.splitlines()
              if l.strip() and not l.startswith("#")]
  assert tuple(commands[:2]) == SETUP_COMMANDS, commands
  for path in DOC_FILES[1:]:
    assert f"({path})" in readme, f"README.md does not link {path}"


def test_relative_links_exist():
  link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
  for path in DOC_FILES + ["BENCHMARKS.md"]:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
      text = f.read()
    for target in link.findall(text):
      if "://" in target or target.startswith("mailto:"):
        continue
      full = os.path.normpath(os.path.join(REPO, os.path.dirname(path),
                                           target))
      assert os.path.exists(full), f"{path}: broken link {target}"


def _env(bin_dir, workdir):
  # No XLA_FLAGS (tests/conftest.py's 8 host devices) and no
  # JAX_DISSECT_SHARED_DATA: the blocks find the data at ../shared/data, as
  # in a checkout.
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", shared_data.ENV)}
  env.update(
      PATH=bin_dir + os.pathsep + env.get("PATH", ""),
      PYTHONPATH=workdir, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
      HF_HUB_OFFLINE="1",
      TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
  return env


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
  """A scratch copy of the repository with ../shared/data beside it, a bin
  directory (python, jax-dissect) and the README's smoke run made."""
  root = tmp_path_factory.mktemp("docs")
  workdir = str(root / "repo")
  shutil.copytree(REPO, workdir, symlinks=True, ignore=shutil.ignore_patterns(
      ".git", ".venv", "results", "__pycache__", ".pytest_cache", "*.egg-info",
      "checkpoints"))
  os.makedirs(root / "shared")
  os.symlink(os.path.abspath(shared_data.require()), root / "shared" / "data")
  bin_dir = root / "bin"
  bin_dir.mkdir()
  # Scripts, not links: a link to a virtual environment's python would
  # start it outside its environment.
  for name, command in (("python", ""), ("jax-dissect", " -m jax_dissect")):
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\nexec {sys.executable}{command} "$@"\n')
    script.chmod(0o755)
  env = _env(str(bin_dir), workdir)
  # One persistent compilation cache for all blocks: many compile the same
  # small models (results do not depend on it).
  env.update(JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  proc = subprocess.run([sys.executable, *SMOKE], cwd=workdir, env=env,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, env


def _run_block(block, workdir, env, scratch):
  """Runs one block; returns (exit status, stdout, stderr)."""
  if block.language == "python":
    script = os.path.join(scratch, f"{block.line}.py")
    with open(script, "w", encoding="utf-8") as f:
      f.write(block.code)
    argv = [sys.executable, script]
  else:
    argv = ["bash", "-e", "-o", "pipefail", "-c", block.code]
  try:
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
  except subprocess.TimeoutExpired as e:
    return "timeout (600 s)", str(e.stdout or ""), str(e.stderr or "")
  return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def block_results(workspace, request, tmp_path_factory):
  """Runs the selected blocks: each file's in order, two files at a time
  (the blocks are mostly single-threaded start-up and compilation, so two
  lanes keep 2 cores busy). {block name: (status, stdout, stderr)}."""
  workdir, env = workspace
  selected = {item.callspec.params["block"].name
              for item in request.session.items
              if getattr(item, "callspec", None) is not None
              and "block" in item.callspec.params}
  files = {}
  for block in RUN_BLOCKS:
    if block.name in selected:
      files.setdefault(block.path, []).append(block)
  scratch = str(tmp_path_factory.mktemp("blocks"))

  def run_file(blocks):
    out = {}
    for block in blocks:
      sub = os.path.join(scratch, block.path.replace("/", "_"))
      os.makedirs(sub, exist_ok=True)
      out[block.name] = _run_block(block, workdir, env, sub)
    return out

  results = {}
  # Files with more blocks first, so the two lanes end close together.
  order = sorted(files.values(), key=len, reverse=True)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for out in pool.map(run_file, order):
      results.update(out)
  return results


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.name for b in RUN_BLOCKS])
def test_block_runs(block, block_results):
  status, stdout, stderr = block_results[block.name]
  assert status == 0, (
      f"{block.name} ({block.language}) failed with exit {status}:"
      f"\n{block.code}\n--- stdout ---\n{stdout[-3000:]}"
      f"\n--- stderr ---\n{stderr[-5000:]}")
