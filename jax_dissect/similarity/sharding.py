"""Similarity kernels with the neurons split across devices.

Each device gets a contiguous block of neurons (columns of A) and the whole
concept matrix P and computes its block of the scores (for soft_wpmi and
wpmi the log-likelihoods L; similarity.compute then subtracts the log prior
over ALL neurons on one device, as a single-device run does, so the result
equals the single-device one bit for bit). K not divisible by the device
count is padded with zero neurons that are dropped.

similarity.compute is the way to run a kernel; it calls `run_plan` here when
it is given several devices. Two equivalent paths:
  method="shard_map": jit + Mesh + jax.shard_map (what JAX recommends).
  method="pmap": jax.pmap, the design card's compatibility option.

The devices may belong to several processes (a multi-process run under
jax.distributed, method "shard_map"): every process then calls `run_plan`
with the same A and P; each puts only its own devices' blocks on them
(A and P become global arrays over the mesh of all processes' devices),
and every process gets the whole S back.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

from jax_dissect.similarity import kernels
from jax_dissect.similarity.kernels import KernelPlan

AXIS = "neurons"
METHODS = ("shard_map", "pmap")


def resolve_devices(devices: Sequence[jax.Device] | int | None = None
                    ) -> list[jax.Device]:
  """The devices to use: None = all of jax.devices(), n = the first n, or
  the given list (ValueError if empty or n is out of range)."""
  available = jax.devices()
  if devices is None:
    return available
  if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
    if not 1 <= devices <= len(available):
      raise ValueError(f"devices={devices}: must be between 1 and the "
                       f"{len(available)} available devices")
    return available[:devices]
  devices = list(devices)
  if not devices:
    raise ValueError("devices is empty; pass None to use all devices")
  return devices


def _block_scores(plan: KernelPlan, num_neurons: int,
                  a_local: jax.Array, p: jax.Array,
                  key: jax.Array) -> jax.Array:
  """The (K_local, M) block of scores of one device (before any prior);
  runs inside a mapped axis."""
  del num_neurons  # The padding neurons are dropped by the caller.
  k_local = a_local.shape[1]
  offset = jax.lax.axis_index(AXIS) * k_local
  ctx = kernels.plan_context(plan, p, key)
  return kernels.map_neuron_chunks(
      lambda x, ids: plan.neuron_scores(x, ids, ctx), a_local,
      min(plan.chunk_size, k_local), neuron_offset=offset)


def _mesh(devices: tuple[jax.Device, ...]) -> jax.sharding.Mesh:
  return jax.make_mesh((len(devices),), (AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


@functools.lru_cache(maxsize=32)
def _shard_map_fn(plan: KernelPlan, num_neurons: int,
                  devices: tuple[jax.Device, ...], key_impl: Any = None
                  ) -> Callable[..., Any]:
  """The jitted kernel over the mesh of `devices`; with `key_impl` it
  takes the key as raw key data (global arrays cannot hold typed keys)."""
  mesh = _mesh(devices)

  def block(a, p, key):
    if key_impl is not None:
      key = jax.random.wrap_key_data(key, impl=key_impl)
    return _block_scores(plan, num_neurons, a, p, key)

  body = jax.shard_map(
      block, mesh=mesh,
      in_specs=(PartitionSpec(None, AXIS), PartitionSpec(), PartitionSpec()),
      out_specs=PartitionSpec(AXIS, None), check_vma=False)
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(body, in_shardings=(NamedSharding(mesh, PartitionSpec(
      None, AXIS)), replicated, replicated))


def _is_multi_process(devices: Sequence[jax.Device]) -> bool:
  return any(d.process_index != jax.process_index() for d in devices)


def _global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array of host value `x` (the same on every process); each
  process copies only its own devices' blocks."""
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def _run_global(plan: KernelPlan, a: np.ndarray, p: np.ndarray,
                key: jax.Array, num_neurons: int,
                devices: tuple[jax.Device, ...]) -> np.ndarray:
  """The shard_map kernel on devices of several processes; S on every
  process (gathered from the devices' blocks)."""
  mesh = _mesh(devices)
  replicated = NamedSharding(mesh, PartitionSpec())
  fn = _shard_map_fn(plan, num_neurons, devices, jax.random.key_impl(key))
  out = fn(_global(a, NamedSharding(mesh, PartitionSpec(None, AXIS))),
           _global(p, replicated),
           _global(np.asarray(jax.random.key_data(key)), replicated))
  return multihost_utils.process_allgather(out, tiled=True)


@functools.lru_cache(maxsize=32)
def _pmap_fn(plan: KernelPlan, num_neurons: int,
             devices: tuple[jax.Device, ...]) -> Callable[..., Any]:
  return jax.pmap(functools.partial(_block_scores, plan, num_neurons),
                  axis_name=AXIS, in_axes=(0, None, None), devices=devices)


def run_plan(plan: KernelPlan, activations: jax.Array,
             concept_activations: jax.Array, key: jax.Array, *,
             devices: Sequence[jax.Device], method: str = "shard_map"
             ) -> jax.Array:
  """Runs a kernel plan with the neurons split across `devices`.

  Called by similarity.compute, which validates the inputs and makes the
  plan for the global shapes (the same validation and chunk size as a
  single-device run).

  Args:
    plan: the kernel's plan (similarity.resolve_plan).
    activations: A, (N, K) float32.
    concept_activations: P, (N, M) float32.
    key: the kernel's PRNG key (a dummy one for kernels without).
    devices: the devices; with devices of several processes every process
      calls this with the same arguments (method "shard_map" only).
    method: "shard_map" (jit + Mesh) or "pmap".

  Returns:
    (K, M) float32 scores before any prior (the log-likelihoods L of
    soft_wpmi and wpmi; S of the other kernels), equal to the
    single-device ones (on every process).
  """
  if method not in METHODS:
    raise ValueError(f"method={method!r}; allowed: {', '.join(METHODS)}")
  devs = tuple(devices)
  n, k = activations.shape
  d = len(devs)
  k_local = -(-k // d)
  if _is_multi_process(devs):
    if method != "shard_map":
      raise ValueError(f"method={method!r} runs on one process's devices; "
                       "use shard_map for the devices of several processes")
    a = np.pad(np.asarray(activations), ((0, 0), (0, k_local * d - k)))
    out = _run_global(plan, a, np.asarray(concept_activations), key, k, devs)
    return jnp.asarray(out[:k])
  a = jnp.pad(activations, ((0, 0), (0, k_local * d - k)))
  if method == "shard_map":
    out = _shard_map_fn(plan, k, devs)(a, concept_activations, key)
  else:
    blocks = a.reshape(n, d, k_local).transpose(1, 0, 2)  # (D, N, K_local)
    out = _pmap_fn(plan, k, devs)(blocks, concept_activations,
                                  key).reshape(d * k_local, -1)
  return out[:k]
