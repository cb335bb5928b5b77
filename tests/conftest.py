"""Test-wide setup: 8 host CPU devices (set before jax is imported), and the
shared data, which must be there (../shared/data beside the repository, or
$JAX_DISSECT_SHARED_DATA): a run without it fails at once, loudly."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") +
    " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top,wrong-import-position
import logging as py_logging

import pytest

from configs import shared_data


def pytest_configure(config):
  del config
  try:
    shared_data.require()
  except FileNotFoundError as e:
    pytest.exit(f"error: {e}", returncode=4)


class _LogLines(py_logging.Handler):
  """Collects the messages of the log records it is given."""

  def __init__(self):
    super().__init__(py_logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
  """The messages absl logs (INFO and above) during the test, a list."""
  handler = _LogLines()
  logger = py_logging.getLogger("absl")
  old = logger.level
  logger.setLevel(py_logging.INFO)
  logger.addHandler(handler)
  yield handler.lines
  logger.removeHandler(handler)
  logger.setLevel(old)
