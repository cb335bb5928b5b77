"""The HTML report at scale: build time, file size, and load time in a real
headless Chromium (DevTools protocol, tests/helpers/browser.py).

A synthetic run of `neurons` neurons (one layer, 5 alternatives and 10 top
images each over a folder of `images` small PNGs) is written, its report
built, then opened `repeats` times in one browser; each record has the
seconds until the page said it was ready (`data-report-ready`, after the
first page of rows is drawn), the page's own clock at that moment
(performance.now()), and the time to sort all rows by similarity.
Needs chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Iterator

PRESETS = {
    "full": dict(neurons=(1_000, 10_000, 50_000), images=128, repeats=5),
    "quick": dict(neurons=(10_000,), images=48, repeats=2),
}


def run(neurons=(10_000,), images: int = 48, repeats: int = 2
        ) -> Iterator[dict]:
  # pylint: disable=g-import-not-at-top
  from jax_dissect import report
  from tests.helpers import browser
  from tests.helpers import report_runs
  from tests.helpers import synthetic_run
  with tempfile.TemporaryDirectory() as tmp, browser.Chromium() as chrome:
    per_class = max(1, -(-images // len(synthetic_run.CLASSES)))
    world = report_runs.sorted_world(n_per_class=per_class)
    folder = synthetic_run.write_images(os.path.join(tmp, "images"), world)
    for n in neurons:
      run_dir = os.path.join(tmp, f"run{n}")
      results = report_runs.write_big_run(run_dir, folder, num_neurons=n)
      start = time.perf_counter()
      path = report.build_report(results)
      built = time.perf_counter() - start
      loads, ready, sorts = [], [], []
      for _ in range(repeats):
        loads.append(chrome.open("file://" + path))
        ready.append(int(chrome.evaluate(
            "document.documentElement.getAttribute('data-report-ready-ms')")))
        start = time.perf_counter()
        chrome.click("#head th[data-key='similarity']")
        chrome.evaluate("document.querySelectorAll('#rows tr').length")
        sorts.append(time.perf_counter() - start)
      yield {"measure": "report", "neurons": n, "images": len(
          world["image_ids"]), "build_s": built,
             "file_mib": os.path.getsize(path) / 2**20,
             "load_s_median": statistics.median(loads),
             "load_s_max": max(loads),
             "ready_ms_median": statistics.median(ready),
             "sort_s_median": statistics.median(sorts),
             "repeats": repeats, "chromium": browser.CHROMIUM}
