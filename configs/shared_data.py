"""jax_dissect.configs.shared_data under its old name (configs.shared_data), for code that
imports it from the repository root."""

from jax_dissect.configs.shared_data import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
