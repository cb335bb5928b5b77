"""Entry points: no environment changes on import, the jax-dissect command,
and every analysis on the README's smoke run with one-line errors."""

import os
import pkgutil
import subprocess
import sys

import pytest

import jax_dissect
from jax_dissect import analyses
from jax_dissect.commands import analyze
from tests import helpers

REPO = helpers.REPO
PY = sys.executable


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", **extra)
  return env


def _run(args, cwd=REPO, timeout=600, **env):
  return subprocess.run([PY, *args], capture_output=True, text=True,
                        cwd=cwd, env=_env(**env), timeout=timeout,
                        check=False)


def test_importing_the_library_changes_no_environment():
  """Every module of the package imports without touching os.environ or
  JAX's configuration (transformers included: nothing is imported with it
  switched off or on)."""
  modules = sorted(m.name for m in pkgutil.walk_packages(
      jax_dissect.__path__, "jax_dissect.")
                   if not m.name.startswith("benchmarks._"))
  code = (
      "import os, importlib, jax\n"
      "before = dict(os.environ)\n"
      "flags = {k: getattr(jax.config, k) for k in "
      "('jax_enable_x64', 'jax_platforms', 'jax_default_matmul_precision')}\n"
      f"for name in {modules!r}:\n"
      "  importlib.import_module(name)\n"
      "after = dict(os.environ)\n"
      "changed = {k for k in set(before) | set(after) "
      "if before.get(k) != after.get(k)}\n"
      "assert not changed, changed\n"
      "assert flags == {k: getattr(jax.config, k) for k in flags}, flags\n"
      "print('imported', len(" + repr(modules) + "))\n")
  proc = _run(["-c", code])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "imported" in proc.stdout


def test_console_command_lists_commands_and_analyses():
  proc = _run(["-m", "jax_dissect", "--help"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ("describe", "analyze", "report", *analyses.names()):
    assert name in proc.stdout
  proc = _run(["-m", "jax_dissect", "stability", "--helpfull"])
  assert "--num_resamples" in proc.stdout and "--text_embedder" not in (
      proc.stdout)
  proc = _run(["-m", "jax_dissect", "frobnicate"])
  assert proc.returncode != 0 and "unknown command 'frobnicate'" in (
      proc.stderr)
  script = os.path.join(os.path.dirname(PY), "jax-dissect")
  if os.path.exists(script):  # Installed with pip install -e .
    proc = subprocess.run([script, "--help"], capture_output=True, text=True,
                          env=_env(), timeout=120, check=False)
    assert proc.returncode == 0 and "describe" in proc.stdout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """The README's main command, run as written (from a scratch directory)."""
  cwd = tmp_path_factory.mktemp("readme")
  proc = _run([os.path.join(REPO, "scripts", "describe_neurons.py"),
               f"--config={REPO}/configs/resnet18_cifar100.py:smoke",
               "--result_dir=results/smoke"], cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return cwd


def _analyze(cwd, name, *flags):
  return _run([os.path.join(REPO, "scripts", "analyze.py"),
               f"--analysis={name}", "--results_dir=results/smoke", *flags],
              cwd=str(cwd))


def _one_line_error(proc, match):
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and match in last, last


def test_every_analysis_on_the_readme_smoke_run(smoke_run):
  cwd = smoke_run
  names = (cwd / "class_names.txt")
  names.write_text("".join(f"class {i}\n" for i in range(512)))
  runs = {
      # The run's random CLIP is rebuilt from config.json for texts outside
      # the concept set (text_embedder=clip / cached+clip).
      "evaluate": ["--layer=layer4", f"--class_names={names}",
                   "--similarity_fns=soft_wpmi,wpmi"],
      "profile": ["--categorizer=clip"],
      "stability": ["--num_resamples=2", "--layers=layer4"],
      "scoring": ["--num_permutations=20", "--layers=layer4"],
      "compositional": ["--layer=layer4", "--units=0,7", "--num_singles=5",
                        "--top_n=2"],
      "linear_explanations": ["--layer=layer4", "--max_length=3"],
      # A small SAE (128 features) on layer4's pooled activations.
      "features": ["--layers=layer4", "--expansion=0.25",
                   "--training_rows=8192", "--num_permutations=10"],
      # Cheap plug-in models (tests/dnd_testing.py); tests/test_dnd_analysis.py
      # runs every stage with tiny Flax models.
      "dnd": ["--layer=layer4", "--units=0", "--selection=clip_dissect",
              "--captioner=tests.helpers.dnd_models:named_captioner",
              "--llm=tests.helpers.dnd_models:label_llm", "--num_images=3",
              "--image_size=64"],
  }
  # backbones needs a second checkpoint: tests/analyses/backbones runs it
  # from this command line on a run of its own.
  assert set(runs) | {"weights", "backbones"} >= set(analyses.names())
  for name, flags in runs.items():
    proc = _analyze(cwd, name, *flags)
    assert proc.returncode == 0, (name, proc.stderr[-3000:])
  analysis = cwd / "results" / "smoke" / "analysis"
  for f in ("evaluation.csv", "profile.png", "stability.csv",
            "explanation_scores.csv",
            "compositional.csv", "evaluate.outputs.json", "dnd.csv",
            "linear_explanations.csv", "features.csv",
            "features_summary.json"):
    assert (analysis / f).exists(), f
  # The README's linear explanations command (its own script).
  proc = _run([os.path.join(REPO, "scripts", "linear_explanations.py"),
               "--results_dir=results/smoke", "--layer=layer4",
               "--max_length=2"], cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "layer4: mean held-out correlation" in proc.stdout
  header = (analysis / "linear_explanations.csv").read_text().splitlines()[0]
  assert header.startswith("layer,unit,correlation,concept_0,weight_0,"
                           "concept_1,weight_1,bias,single_label,"
                           "single_correlation"), header
  # One-line errors for bad flags.
  bad = [
      ("stability", ["--layers=layer9"], "layer 'layer9' is not in"),
      ("stability", ["--num_resamples=0"], "num_resamples=0 must be >= 1"),
      ("scoring", ["--num_permutations=0"],
       "num_permutations=0 must be >= 1"),
      ("scoring", ["--split=0.005"], "leaves 5 held-out images"),
      ("compositional", ["--layer=layer4", "--units=abc"],
       "units='abc' is not an integer"),
      ("compositional", ["--layer=layer4", "--units=1", "--top_n=0"],
       "top_n=0 must be >= 1"),
      ("compositional", ["--layer=layer4", "--units=600"],
       "units=600 must be <= 511"),
      ("profile", ["--tau=nan"], "tau=nan must be a finite number"),
      ("linear_explanations", ["--width=0"], "width=0 must be >= 1"),
      ("linear_explanations", ["--alpha=2"], "alpha=2.0 must be <= 1.0"),
      ("profile", ["--categorizer=gpt"], "categorizer='gpt' is not valid"),
      ("evaluate", ["--layer=layer4"], "class_names is required"),
      ("evaluate", ["--layer=layer4", f"--class_names={names}",
                    "--similarity_fns=pmi"], "similarity_fns='pmi'"),
      ("weights", ["--layer_in=layer3", "--layer_out=layer4"],
       "no 'kernel'"),
      ("dnd", ["--layer=layer4", "--units="], "units is empty"),
      ("dnd", ["--layer=layer4", "--selection=best"],
       "selection='best' is not valid"),
  ]
  for name, flags, match in bad:
    _one_line_error(_analyze(cwd, name, *flags), match)
  _one_line_error(_analyze(cwd, "nope"), "unknown analysis 'nope'")
  _one_line_error(_run([os.path.join(REPO, "scripts", "analyze.py"),
                        "--results_dir=results/smoke"], cwd=str(cwd)),
                  "--analysis is required")


def test_weight_analysis_takes_the_run_target_model(smoke_run):
  """A run that labels fc: the fc kernel comes from the run's own target
  model (random weights rebuilt from config.json: name, weights, seed)."""
  cwd = smoke_run
  proc = _run([os.path.join(REPO, "scripts", "describe_neurons.py"),
               f"--config={REPO}/configs/resnet18_cifar100.py:smoke",
               "--result_dir=results/fc", "--target_layers=layer4,fc"],
              cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _run([os.path.join(REPO, "scripts", "weight_analysis.py"),
               "--results_dir=results/fc", "--layer_in=layer4",
               "--layer_out=fc", "--top_n=100"], cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "all weights: r=" in proc.stdout
  assert (cwd / "results" / "fc" / "analysis" /
          "weights_layer4_fc.png").exists()
  proc = _run([os.path.join(REPO, "scripts", "make_report.py"),
               "--results_dir=results/fc", "--num_thumbs=0"], cwd=str(cwd))
  assert proc.returncode == 0, proc.stderr[-3000:]
  page = (cwd / "results" / "fc" / "report.html").read_text()
  assert "Weights vs label similarity" in page


def test_plug_ins_keep_pytorch_available():
  """A package.module:function plug-in may wrap a PyTorch model, so the
  analyses' entry point then leaves transformers' PyTorch on."""
  assert not analyze._needs_torch(analyses.make_config("dnd"))
  assert analyze._needs_torch(analyses.make_config(
      "dnd", {"captioner": "my_models:blip"}))
  assert analyze._needs_torch(analyses.make_config(
      "profile", {"text_embed_fn": "my_models:embed"}))
  assert not analyze._needs_torch(analyses.make_config("stability"))
