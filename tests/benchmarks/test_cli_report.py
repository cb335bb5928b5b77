"""The cli (help time) and report (load time) benchmark suites run."""

import pytest

from benchmarks import cli
from benchmarks import report
from tests.helpers import browser


def test_cli_suite_runs_tiny():
  assert {"full", "quick"} <= set(cli.PRESETS)
  records = list(cli.run(commands=("", "stability"), repeats=1))
  helps = [r for r in records if r["measure"] == "help"]
  assert {r["command"] for r in helps} == {"(none)", "stability"}
  assert all(r["exit_codes"] == [0] and r["seconds_median"] > 0
             for r in helps)
  assert [r["what"] for r in records if r["measure"] == "baseline"] == [
      "python -c pass", "import jax"]


@pytest.mark.skipif(browser.CHROMIUM is None, reason="needs chromium")
def test_report_suite_runs_tiny():
  assert {"full", "quick"} <= set(report.PRESETS)
  (record,) = report.run(neurons=(200,), images=16, repeats=1)
  assert record["neurons"] == 200 and record["file_mib"] > 0
  assert 0 < record["ready_ms_median"] and record["load_s_median"] > 0
