"""The command line as a user meets it: help of every command (exit 0,
fast, no jax), exit codes and single error lines, quiet output, Ctrl-C,
an unreachable hub, and the console script of a non-editable install run
from outside the checkout."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from jax_dissect.commands import help as help_lib
from jax_dissect.store import results as results_lib
from tests import helpers
from tests.helpers import synthetic_run as synth

REPO = helpers.REPO
PY = sys.executable
CONCEPTS = "dog\ncat\ncar\ntree\nwater\nsky\nhouse\nperson\n"


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "HF_HUB_OFFLINE")}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
  env.update(extra)
  return env


def _cli(*args, cwd=REPO, timeout=300, **env):
  return subprocess.run([PY, "-m", "jax_dissect", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=timeout,
                        env=_env(**env), check=False)


def _one_error(proc, code, match):
  """stderr is exactly one `error:` line (quiet mode: nothing else)."""
  assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith("error: ") and match in lines[0], lines[0]
  assert len(lines[0]) <= 300


# ----------------------------------------------------------------------------
# Help.
# ----------------------------------------------------------------------------


def test_top_help_lists_each_command_with_a_line():
  proc = _cli("--help")
  assert proc.returncode == 0 and proc.stderr == ""
  for name in (*help_lib.COMMANDS, *help_lib.analysis_names()):
    line = next((l for l in proc.stdout.splitlines()
                 if l.startswith(f"  {name} ")), None)
    assert line and len(line.split()) > 2, name  # The name and its line.
  proc = _cli()
  assert proc.returncode == 2 and "usage: jax-dissect COMMAND" in proc.stdout


def test_every_command_help_exits_0_names_it_and_skips_jax():
  """`jax-dissect SUB --help` for every SUB, in one process each way a
  user asks; jax, flax and transformers stay unimported (seconds)."""
  code = (
      "import sys, time\n"
      "from jax_dissect import commands\n"
      "out = {}\n"
      "for argv in " + repr([
          [c, "--help"] for c in (*help_lib.COMMANDS,
                                  *help_lib.analysis_names())] + [
          ["analyze", "--analysis=stability", "-h"], ["help", "report"],
          ["describe", "--helpfull"]]) + ":\n"
      "  t = time.perf_counter()\n"
      "  try:\n"
      "    commands.main(argv)\n"
      "  except SystemExit as e:\n"
      "    out[' '.join(argv)] = (e.code, time.perf_counter() - t)\n"
      "heavy = [m for m in ('jax', 'flax', 'transformers', 'numpy') "
      "if m in sys.modules]\n"
      "print('RESULT', out, heavy)\n")
  proc = subprocess.run([PY, "-c", code], capture_output=True, text=True,
                        env=_env(), timeout=120, cwd=REPO, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = proc.stdout.split("RESULT ", 1)[1]
  assert result.endswith("[]\n"), result  # No heavy import.
  codes = eval(result.rsplit(" [", 1)[0])  # pylint: disable=eval-used
  assert all(code == 0 for code, _ in codes.values()), codes
  for c in (*help_lib.COMMANDS, *help_lib.analysis_names()):
    assert f"usage: jax-dissect {c} [flags]" in proc.stdout, c
  assert "usage: jax-dissect analyze --analysis=stability [flags]" in (
      proc.stdout)
  assert "--num_resamples=INT" in proc.stdout  # stability's own flag.
  assert "--config.<option>=VALUE" in proc.stdout  # describe's.


def test_help_of_scripts_names_the_script():
  proc = subprocess.run([PY, os.path.join(REPO, "scripts", "stability.py"),
                         "--help"], capture_output=True, text=True,
                        env=_env(), timeout=120, check=False)
  assert proc.returncode == 0
  assert proc.stdout.startswith("usage: stability.py [flags]")


def test_help_index_is_up_to_date():
  """--help reads jax_dissect/commands/help_index.json when the sources of
  a command's flags are unchanged; after a change the help is right but
  slow until the index is written again."""
  stale = [k for k in help_lib.keys() if help_lib.indexed(k) is None]
  assert not stale, (f"help index out of date for {stale}: run python "
                     "scripts/update_help_index.py")


@pytest.mark.parametrize("key", ["describe", "analysis:evaluate"])
def test_help_index_equals_the_modules(key):
  code = ("import json\nfrom jax_dissect.commands import help as h\n"
          f"print(json.dumps(h.live_spec({key!r})))\n")
  proc = subprocess.run([PY, "-c", code], capture_output=True, text=True,
                        env=_env(), timeout=300, cwd=REPO, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  live = json.loads(proc.stdout)
  indexed = dict(help_lib.indexed(key))
  indexed.pop("digest")
  assert live == indexed


# ----------------------------------------------------------------------------
# Errors and exit codes.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli")
  world = synth.make_world(n_per_class=4)
  return synth.write_results(str(root / "res"), world)


@pytest.mark.parametrize("args,match", [
    (["frobnicate"], "unknown command 'frobnicate'; commands: describe"),
    (["report", "--nope=1"], "Unknown command line flag 'nope'"),
    (["report"], "--results_dir is required"),
    (["report", "--results_dir=RUN", "extra"], "unexpected arguments"),
    (["report", "--results_dir=RUN", "--num_thumbs=x"],
     "flag --num_thumbs=x: invalid literal for int()"),
    (["report", "--results_dir=/no/such/run"],
     "results directory '/no/such/run' does not exist"),
    (["stability", "--results_dir=RUN", "--num_resamples=0"],
     "num_resamples=0 must be >= 1"),
    (["analyze", "--analysis=nope", "--results_dir=RUN"],
     "unknown analysis 'nope'"),
    (["describe", "--config=nope"],
     "--config=nope: no such config file 'nope' and no shipped config"),
    (["describe", "--config=resnet18_cifar100:big"],
     "--config=resnet18_cifar100:big: cannot load it: ValueError: unknown "
     "config argument 'big'"),
])
def test_bad_usage_is_one_line_and_exit_2(run_dir, args, match):
  args = [a.replace("RUN", run_dir) for a in args]
  _one_error(_cli(*args), 2, match)


def test_a_failure_while_running_is_one_line_and_exit_1(run_dir, tmp_path):
  """A damaged cached array found while the analysis runs."""
  damaged = tmp_path / "res"
  shutil.copytree(run_dir, damaged)
  with open(damaged / "arrays.json", encoding="utf-8") as f:
    arrays = json.load(f)
  for layer, path in arrays["activations"].items():
    copy = damaged / f"A_{layer}.npy"
    shutil.copy(path, copy)
    with open(copy, "r+b") as f:
      f.truncate(os.path.getsize(copy) - 64)
    arrays["activations"][layer] = str(copy)
  run = results_lib.load_run(damaged)  # Written again, as a whole run.
  results_lib.write_run(damaged, neurons=run.neurons, concepts=run.concepts,
                        image_ids=run.image_ids, config=run.config,
                        arrays=arrays)
  proc = _cli("stability", f"--results_dir={damaged}", "--num_resamples=2")
  _one_error(proc, 1, "A_layer4.npy")


def test_verbosity_shows_log_lines_and_a_bug_s_traceback(run_dir, tmp_path):
  quiet = _cli("stability", f"--results_dir={run_dir}", "--num_resamples=2",
               "--layers=fc", "--top_ks=5")
  assert quiet.returncode == 0, quiet.stderr[-2000:]
  assert quiet.stderr == "", quiet.stderr  # Quiet: nothing but results.
  assert quiet.stdout.startswith("fc: mean agreement")
  loud = _cli("stability", f"--results_dir={run_dir}", "--num_resamples=2",
              "--layers=fc", "--top_ks=5", "--verbosity=0")
  assert loud.returncode == 0 and "] wrote " in loud.stderr
  # A bug's traceback with --verbosity=1 (a plug-in that raises
  # ZeroDivisionError: not bad input, so exit 1).
  (tmp_path / "buggy_plugin.py").write_text(
      "def embed(texts):\n  return len(texts) / 0\n")
  bug = _cli("profile", f"--results_dir={run_dir}",
             "--text_embed_fn=buggy_plugin:embed", "--verbosity=1",
             PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}")
  assert bug.returncode == 1 and "Traceback" in bug.stderr
  assert bug.stderr.strip().splitlines()[-1].startswith("error: ")


# ----------------------------------------------------------------------------
# Describe: Ctrl-C, the hub, the README's script.
# ----------------------------------------------------------------------------


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_partial_file(tmp_path):
  concepts = tmp_path / "concepts.txt"
  concepts.write_text(CONCEPTS)
  proc = subprocess.Popen(
      [PY, "-m", "jax_dissect", "describe",
       "--config=resnet18_cifar100:smoke", f"--concept_set={concepts}",
       f"--result_dir={tmp_path / 'run'}",
       f"--activation_dir={tmp_path / 'cache'}", "--config.max_images=400",
       "--config.shard_images=50", "--batch_size=25"],
      cwd=str(tmp_path), env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  shards = str(tmp_path / "cache" / "activations" / "*.parts" / "*.npy")
  deadline = time.monotonic() + 300
  while not glob.glob(shards) and proc.poll() is None:
    assert time.monotonic() < deadline, "no activation shard was saved"
    time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  start = time.monotonic()
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert time.monotonic() - start < 30
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  errors = [l for l in err.splitlines() if l.startswith("error:")]
  assert errors == [err.strip().splitlines()[-1]]
  assert errors[0].startswith("error: interrupted (Ctrl-C)")
  assert not os.path.exists(tmp_path / "run")  # No half-written results.
  assert not glob.glob(str(tmp_path / "cache" / "**" / ".tmp-*"),
                       recursive=True)
  assert out == ""


def test_an_unreachable_hub_model_fails_at_once(tmp_path):
  start = time.monotonic()
  proc = _cli("describe", "--config=resnet18_cifar100:smoke",
              "--clip_model=openai/clip-vit-base-patch16",
              f"--result_dir={tmp_path / 'run'}",
              f"--activation_dir={tmp_path / 'cache'}", cwd=str(tmp_path),
              HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
  seconds = time.monotonic() - start
  _one_error(proc, 2, "--clip_model=openai/clip-vit-base-patch16: the "
             "Hugging Face hub cannot be reached and it is not in the local "
             "cache; pass --clip_model=DIR")
  print(f"unreachable hub model: failed in {seconds:.1f} s")
  assert seconds < 60  # No minute of retries (2 shared cores: generous).


def test_readme_config_path_and_name_from_anywhere(tmp_path):
  """--config as the README writes it, from the checkout and from a
  directory without configs/, and by name: each loads (the run then stops
  at a later check, here a bad --process_id)."""
  for cwd, spec in ((REPO, "configs/resnet18_cifar100.py:smoke"),
                    (str(tmp_path), "configs/resnet18_cifar100.py:smoke"),
                    (str(tmp_path), "resnet18_cifar100:smoke")):
    proc = _cli("describe", f"--config={spec}", "--num_processes=2",
                "--process_id=5", "--coordinator_address=localhost:1",
                cwd=cwd)
    _one_error(proc, 2, "--process_id=5 must be between 0 and")


# ----------------------------------------------------------------------------
# A non-editable install, run from outside the checkout.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """`pip install .` (no deps: the test environment has them) into a
  target directory; the console script and the package from there."""
  root = tmp_path_factory.mktemp("install")
  src = root / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "jax_dissect"):
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name,
                      ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(path, src / name)
  target = root / "site"
  subprocess.run([PY, "-m", "pip", "install", "--no-deps",
                  "--no-build-isolation", "-q", "--target", str(target),
                  str(src)], check=True, capture_output=True, timeout=300)
  script = target / "bin" / "jax-dissect"
  assert script.exists()
  return {"script": str(script), "site": str(target), "root": root}


def _installed_env(installed):
  env = _env(PYTHONPATH=installed["site"])
  env["JAX_DISSECT_SHARED_DATA"] = os.environ.get(
      "JAX_DISSECT_SHARED_DATA") or os.path.join(os.path.dirname(REPO),
                                                 "shared", "data")
  return env


def test_installed_console_script_runs_from_anywhere(installed, tmp_path):
  env = _installed_env(installed)
  where = subprocess.run([PY, "-c", "import jax_dissect; "
                          "print(jax_dissect.__file__)"], env=env,
                         cwd=str(tmp_path), capture_output=True, text=True,
                         check=True).stdout
  assert where.startswith(installed["site"]), where
  for args in (["--help"], ["describe", "--help"], ["report", "-h"]):
    proc = subprocess.run([installed["script"], *args], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
  concepts = tmp_path / "concepts.txt"
  concepts.write_text(CONCEPTS)
  proc = subprocess.run(
      [installed["script"], "describe", "--config=resnet18_cifar100:smoke",
       f"--concept_set={concepts}", "--config.max_images=100",
       "--result_dir=results/smoke"], env=env, cwd=str(tmp_path),
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith("wrote results/smoke: 1024 neurons")
  # Quiet: progress lines only, no log prefixes, warnings or tracebacks.
  for line in proc.stderr.splitlines():
    assert not line.startswith(("I1", "W1", "E1", "warning", "Traceback")), (
        line)
  proc = subprocess.run([installed["script"], "report",
                         "--results_dir=results/smoke", "--layers=layer4"],
                        env=env, cwd=str(tmp_path), capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  page = (tmp_path / "results" / "smoke" / "report.html").read_text()
  assert page.count("data:image/jpeg;base64,") > 50  # The probe's photos.
