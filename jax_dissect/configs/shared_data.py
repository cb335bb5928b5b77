"""Where the project's read-only shared data is: one place for configs/tests.

The data (concept sets, 1000 ImageNet photos, CLIP's BPE file) is found,
in this order, at $JAX_DISSECT_SHARED_DATA; at ../shared/data beside the
source checkout the package runs from; at ../shared/data or ./shared/data
beside the working directory (an installed package run from the
checkout). It is read from there, never copied.
"""

import os

ENV = "JAX_DISSECT_SHARED_DATA"
# The directory above the package: a source checkout when it holds
# pyproject.toml (editable installs, scripts/, tests).
_ABOVE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def candidates() -> list[str]:
  """The places looked at, in order."""
  if os.environ.get(ENV):
    return [os.environ[ENV]]
  out = []
  if os.path.isfile(os.path.join(_ABOVE, "pyproject.toml")):
    out.append(os.path.join(os.path.dirname(_ABOVE), "shared", "data"))
  cwd = os.getcwd()
  out += [os.path.join(os.path.dirname(cwd), "shared", "data"),
          os.path.join(cwd, "shared", "data")]
  return list(dict.fromkeys(out))


def root() -> str:
  """The shared data directory: the first candidate that exists, else the
  first candidate (see `require`)."""
  places = candidates()
  return next((p for p in places if os.path.isdir(p)), places[0])


def path(*parts: str) -> str:
  """A path inside the shared data directory."""
  return os.path.join(root(), *parts)


def require() -> str:
  """The shared data directory; FileNotFoundError if it is missing."""
  if not os.path.isdir(path("imagenet_sample")):
    raise FileNotFoundError(
        f"the shared data is not at {root()!r}: set {ENV}=<dir> (the "
        "directory holding imagenet_sample/ and concepts/) or put it at "
        "../shared/data beside the repository")
  return root()
