"""The five CLIP-Dissect similarity functions, their registry and runner.

Every kernel takes activations A of shape (N images, K neurons) and the
concept-activation matrix P of shape (N images, M concepts), numpy or jax,
and returns S of shape (K, M), float32, where S[k, m] scores how well
concept m describes neuron k (formulas: docs/design.md).

  kernels.py   the formulas, as plans: prepare(P), neuron_scores(A chunk),
               the (soft_)wpmi prior; neuron-chunked so memory stays bounded
  registry.py  name -> planner, defaults and facts (uses_top_k, uses_key)
  sharding.py  a plan run with the neurons split over devices
  runner.py    `compute(name, A, P, ...)`, the one way to run a kernel by
               name, and the public functions soft_wpmi, wpmi, ...

    s = similarity.compute("soft_wpmi", A, P)   # all devices
    s = similarity.soft_wpmi(A, P, top_k=100)   # strict, one device
"""

from jax_dissect.similarity.runner import compute
from jax_dissect.similarity.runner import cos_similarity
from jax_dissect.similarity.runner import cos_similarity_cubed
from jax_dissect.similarity.runner import fit_hyper
from jax_dissect.similarity.runner import rank_reorder
from jax_dissect.similarity.runner import resolve_plan
from jax_dissect.similarity.runner import soft_wpmi
from jax_dissect.similarity.runner import top_concepts
from jax_dissect.similarity.runner import wpmi
from jax_dissect.similarity.kernels import KernelPlan
from jax_dissect.similarity.kernels import rank_reorder_permutations
from jax_dissect.similarity.kernels import validate_inputs
from jax_dissect.similarity.registry import get_kernel
from jax_dissect.similarity.registry import Kernel
from jax_dissect.similarity.registry import KERNELS
from jax_dissect.similarity.registry import names
from jax_dissect.similarity.registry import plan_kernel
from jax_dissect.similarity.registry import register_kernel

__all__ = [
    "KERNELS", "Kernel", "KernelPlan", "compute", "cos_similarity",
    "cos_similarity_cubed", "fit_hyper", "get_kernel", "names", "plan_kernel",
    "rank_reorder", "rank_reorder_permutations", "register_kernel",
    "resolve_plan", "soft_wpmi", "top_concepts", "validate_inputs", "wpmi",
]
