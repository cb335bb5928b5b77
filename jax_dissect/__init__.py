"""jax_dissect: CLIP-Dissect neuron descriptions in JAX/Flax.

Packages, by job (docs/design.md has the rule of which may import which):

  similarity/  the five kernels, their registry, sharding, `compute`
  store/       atomic files, the array cache, a run's results directory
  data/        probe sets, image decoding, preprocessing, concept sets
  clip/        CLIP's tokenizer, loading, embeddings and the matrix P
  models/      target models, weight conversion, layer capture
  analyses/    one package per analysis of a run
  pipeline/    describe_neurons, its options and checks
  report/      the HTML report
  runtime/     devices, processes, precision, progress, options, plug-ins
  commands/    the entry points (jax-dissect and scripts/)

The layer-capture API is importable from the package (loaded on first use,
so `import jax_dissect` stays cheap):

  jax_dissect.list_layers(module, variables, (1, 224, 224, 3))
  jax_dissect.collect_activations(module, variables, images, ["layer4"])

See jax_dissect.models.capture for linen/nnx modules and apply functions.
Modules of versions before 0.2 moved (docs/changelog.md): importing one
raises an ImportError naming its new place, except `jax_dissect.results`,
an alias of `jax_dissect.store.results` kept for one release.
`jax_dissect.features` (sparse autoencoders, user directions) is the
public path of the features analysis's library.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.2.0"

_ACTIVATIONS_API = ("list_layers", "capture_pooled", "capture_outputs",
                    "collect_activations", "iter_activations", "pool_output")

__all__ = list(_ACTIVATIONS_API)

# Modules of 0.1 -> where they are now.
MOVED = {
    "activations": "jax_dissect.models.capture",
    "benchmarks": "benchmarks/ at the repository root (not installed)",
    "cache": "jax_dissect.store.cache (with store.integrity, store.locks, "
             "store.shard_grid)",
    "callables": "jax_dissect.runtime.callables",
    "capture_nnx": "jax_dissect.models.capture_nnx",
    "compositional": "jax_dissect.analyses.compositional",
    "concepts": "jax_dissect.data.concepts",
    "data_parallel": "jax_dissect.runtime.data_parallel",
    "distributed": "jax_dissect.runtime.distributed",
    "dnd": "jax_dissect.analyses.dnd",
    "evaluate": "jax_dissect.analyses.evaluate",
    "files": "jax_dissect.store.files",
    "hf_loading": "jax_dissect.runtime.hub",
    "linear_explanations": "jax_dissect.analyses.linear_explanations",
    "loader": "jax_dissect.data.loader",
    "options": "jax_dissect.runtime.options",
    "precision": "jax_dissect.runtime.precision",
    "preflight": "jax_dissect.pipeline.checks",
    "preprocess": "jax_dissect.data.preprocess",
    "profile": "jax_dissect.analyses.profile",
    "progress": "jax_dissect.runtime.progress",
    "robustness": "jax_dissect.analyses.stability",
    "scoring": "jax_dissect.analyses.scoring",
    "sharding": "jax_dissect.similarity.sharding",
    "significance": "jax_dissect.analyses.scoring",
    "stability": "jax_dissect.analyses.stability",
    "text_embed": "jax_dissect.clip.text_embed",
    "weights": "jax_dissect.analyses.weights",
}
# Public names that are another module: `jax_dissect.features` (sparse
# autoencoders and user directions, a stable path; they live with the
# features analysis), and `jax_dissect.results`, 0.1's name of
# jax_dissect.store.results, kept for one release.
ALIASES = {"features": "jax_dissect.analyses.features",
           "results": "jax_dissect.store.results"}


class _Alias(importlib.abc.Loader):
  """Loads an old module name as the module it now is."""

  def __init__(self, target: str):
    self.target = target

  def create_module(self, spec):
    del spec
    return importlib.import_module(self.target)

  def exec_module(self, module):
    del module


class _MovedModules(importlib.abc.MetaPathFinder):
  """Answers imports of 0.1's module names (only those; it is asked last,
  after every real module was looked for)."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    parts = fullname.split(".")
    if parts[0] != __name__ or len(parts) < 2:
      return None
    if len(parts) == 2 and parts[1] in ALIASES:
      return importlib.util.spec_from_loader(fullname,
                                             _Alias(ALIASES[parts[1]]))
    if parts[1] in MOVED:
      raise ImportError(f"{__name__}.{parts[1]} moved to {MOVED[parts[1]]} "
                        f"in jax_dissect 0.2 (see docs/changelog.md)",
                        name=fullname)
    return None


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
  sys.meta_path.append(_MovedModules())


def __getattr__(name):
  if name in _ACTIVATIONS_API:
    from jax_dissect.models import capture  # pylint: disable=g-import-not-at-top
    return getattr(capture, name)
  raise AttributeError(f"module 'jax_dissect' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_ACTIVATIONS_API))
