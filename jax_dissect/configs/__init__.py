"""The configs of describe_neurons that ship with the package.

A config is a module here with `get_config(arg=None)` returning an
ml_collections ConfigDict of describe_neurons' options; `arg` selects a
variant (`smoke`: offline, small random models). The command line names
one by its name or by a path to a config file:

  jax-dissect describe --config=resnet18_cifar100:smoke
  jax-dissect describe --config=configs/resnet18_cifar100.py:smoke
  jax-dissect describe --config=/path/to/my_config.py

`resolve` turns such a value into a file path; importing this package
imports nothing heavy (the command's --help reads it).
"""

from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
# Modules here that are helpers, not configs.
_HELPERS = ("common", "shared_data")


def names() -> list[str]:
  """The shipped configs' names, sorted."""
  return sorted(f[:-3] for f in os.listdir(_HERE)
                if f.endswith(".py") and not f.startswith("_")
                and f[:-3] not in _HELPERS)


def path(name: str) -> str:
  """The file of shipped config `name`."""
  if name not in names():
    raise ValueError(f"no shipped config named {name!r}; shipped: "
                     f"{', '.join(names())}")
  return os.path.join(_HERE, f"{name}.py")


def resolve(spec: str) -> str:
  """A --config value as `<file>[:arg]` that ml_collections can load.

  Args:
    spec: `<file>[:arg]` (an existing file, kept as it is), or
      `<name>[:arg]` of a shipped config; a path to a file that does not
      exist whose base name is a shipped config's (`configs/<name>.py`,
      the repository's copies) is that shipped config.

  Returns:
    The value with the file's path.

  Raises:
    ValueError: neither a file nor a shipped config; the message lists the
      shipped ones.
  """
  file, sep, arg = spec.partition(":")
  if os.path.isfile(os.path.expanduser(file)):
    return spec
  base = os.path.basename(file)
  name = base[:-3] if base.endswith(".py") else base
  if name in names() and (file == name or base.endswith(".py")):
    return path(name) + sep + arg
  raise ValueError(f"--config={spec}: no such config file {file!r} and no "
                   f"shipped config of that name; shipped: "
                   f"{', '.join(names())} (e.g. --config={names()[0]}:smoke)")
