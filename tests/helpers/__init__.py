"""Shared builders of the tests (the one place tests share code from):

  cli.py              running describe_neurons.py in a subprocess, reading
                      its outputs
  pipeline_config.py  an in-process describe_neurons config on tiny models
  synthetic_run.py    a results directory with planted labels, no models
  tiny_clip.py        a tiny random CLIP config and offline tokenizer
  numpy_kernels.py    per-neuron numpy references of the five kernels
  dnd_models.py       tiny seeded models for Describe-and-Dissect
  browser.py          a headless Chromium driven over the DevTools pipe
  report_runs.py      runs for the report (probe folder named, 10k neurons)

and REPO, the repository root.
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
