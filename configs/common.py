"""jax_dissect.configs.common under its old name (configs.common), for code that
imports it from the repository root."""

from jax_dissect.configs.common import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
