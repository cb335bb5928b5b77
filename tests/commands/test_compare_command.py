"""`jax-dissect compare` on two smoke runs: files, the page (in headless
Chromium when installed), one-line errors (the notes on runs with other
concept sets: tests/analyses/compare)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests import helpers
from tests.helpers import smoke_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  return smoke_runs.make(tmp_path_factory)


def _compare(*flags):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "jax_dissect", "compare",
                         *flags], cwd=helpers.REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def test_compare_command_and_page(runs, tmp_path):
  out = tmp_path / "cmp"
  proc = _compare(f"--results_dirs={runs['seed0']},{runs['seed1']}",
                  f"--out_dir={out}", "--names=step0,step1",
                  "--accuracies=0.5,0.6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == str(out / "compare.html")
  assert "step0 vs step1 layer4: label agreement" in proc.stdout
  for name in ("compare_profiles.csv", "compare_agreement.csv",
               "compare_matches.csv", "compare_trend.csv",
               "compare_accuracy.csv", "compare_profiles.png",
               "compare_trend.png", "compare.html", "comparison.json"):
    assert (out / name).exists(), name
  page = (out / "compare.html").read_text()
  assert page.count("data:image/png;base64,") == 3
  assert "first 200 of 576 rows" in page  # compare_matches: 64 + 512.
  if CHROMIUM is None:
    pytest.skip("chromium is not installed")
  with tempfile.TemporaryDirectory() as profile:
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         "--dump-dom", "file://" + str(out / "compare.html")],
        capture_output=True, text=True, timeout=120)
  assert dom.returncode == 0, dom.stderr[-2000:]
  assert 'data-compare-ready="1"' in dom.stdout
  assert not [l for l in dom.stderr.splitlines() if ":CONSOLE" in l]
  assert len(re.findall(r"<table", dom.stdout)) == 5


def test_compare_command_errors(runs, tmp_path):
  for flags, message in (
      ([f"--results_dirs={runs['seed0']}", "--out_dir=x"],
       "needs two or more results directories"),
      ([f"--results_dirs={runs['seed0']},{runs['seed1']}", "--out_dir=x",
        "--accuracies=a,b"], "must be numbers"),
      ([f"--results_dirs={runs['seed0']},{tmp_path}/none", "--out_dir=x"],
       "does not exist")):
    proc = _compare(*flags)
    assert proc.returncode == 2, (flags, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
