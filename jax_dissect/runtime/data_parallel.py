"""Data parallelism over a process's local devices, and the `devices` option.

A forward pass (the target's activations, CLIP's image and text towers)
runs its batches data parallel over a 1-D mesh of local devices: the
parameters are replicated on every device once, and each call computes n
batches at once, one batch per device. A batch of B <= rows inputs is padded
with zero rows to `rows`, so every batch is computed by the same program on
the same rows whatever the device count: its outputs are the same bit for
bit on 1 device or 8 (and in a run of several processes), because the
per-device computation of a batch is the same program on the same data. (A
split of one batch over the devices would change the rounding of the
forward passes: XLA's convolutions and matrix products round differently
for other batch sizes.)

  dp = DataParallel("auto")              # all local devices
  params = dp.replicate(params)          # once
  for outputs, b in dp.run_batches(jitted, params, batches, rows=64):
    ...                                  # numpy outputs of one batch, b rows

The similarity kernels use the same option: `kernel_devices` gives the
devices of every process (the global mesh) for the same `devices` value.
The mesh of a forward pass holds only local devices, so each process of a
multi-process run embeds its own slice of the probe set with no
communication.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

AXIS = "batch"
AUTO = "auto"

# What the `devices` option accepts: "auto" (all), a count, or devices.
Devices = str | int | Sequence[jax.Device] | None


def check_option(value: Any) -> str | int:
  """The `devices` option as "auto" or a positive int (ValueError if not).

  Accepts "auto", a positive int, or a string of digits ("8"). The count
  is checked against the devices present when they are used.
  """
  if value is None or value == AUTO:
    return AUTO
  if isinstance(value, str) and value.strip().isdigit():
    value = int(value)
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if value >= 1:
      return int(value)
  raise ValueError(f"devices={value!r} is not valid; allowed: 'auto' (all "
                   "local devices) or a positive number of devices")


def local_devices(devices: Devices = None) -> list[jax.Device]:
  """This process's devices for `devices`.

  Args:
    devices: None or "auto" for all of jax.local_devices(), a count n for
      the first n, or a sequence of devices (used as given).

  Raises:
    ValueError: for a count larger than the local devices, or a bad value.
  """
  if devices is None or isinstance(devices, (str, int, np.integer)):
    spec = check_option(devices)
    available = jax.local_devices()
    if spec == AUTO:
      return list(available)
    if spec > len(available):
      raise ValueError(
          f"devices={spec}: this process has only {len(available)} "
          f"device(s) ({available[0].platform}); use devices='auto' or at "
          f"most {len(available)}")
    return list(available[:spec])
  devices = list(devices)
  if not devices:
    raise ValueError("devices is empty; pass 'auto' to use all devices")
  return devices


def kernel_devices(devices: Devices = None) -> list[jax.Device]:
  """The devices of every process for `devices`: the kernels' global mesh.

  "auto" is all of jax.devices(); a count n is the first n local devices
  of each process (so n * process_count devices in all). One process:
  the same as `local_devices`.
  """
  spec = check_option(devices) if not isinstance(
      devices, (list, tuple)) else None
  if spec is None:
    return list(devices)
  if spec == AUTO:
    return list(jax.devices())
  local_devices(spec)  # Checks the count.
  by_process: dict[int, list[jax.Device]] = {}
  for d in jax.devices():
    by_process.setdefault(d.process_index, []).append(d)
  return [d for p in sorted(by_process) for d in by_process[p][:spec]]


class DataParallel:
  """A 1-D mesh of local devices with its replicated and batch shardings.

  Attributes:
    devices: the mesh's devices.
    mesh: jax.sharding.Mesh with the one axis AXIS.
    replicated: NamedSharding of arrays copied to every device.
    batch: NamedSharding splitting axis 0 over the devices.
  """

  def __init__(self, devices: Devices = None):
    self.devices = local_devices(devices)
    self.mesh = jax.make_mesh((len(self.devices),), (AXIS,),
                              axis_types=(jax.sharding.AxisType.Auto,),
                              devices=self.devices)
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.batch = NamedSharding(self.mesh, PartitionSpec(AXIS))

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def replicate(self, tree: Any) -> Any:
    """Copies a pytree of arrays to every device of the mesh."""
    return jax.device_put(tree, self.replicated)

  def run_batches(self, fn: Callable[..., Any], params: Any,
                  batches: Iterable[np.ndarray | tuple[np.ndarray, ...]],
                  rows: int) -> Iterator[tuple[Any, int]]:
    """Runs `fn` on a stream of batches, one batch per device per call.

    Each batch (an array, or a tuple of arrays with the same first
    dimension B <= rows) is padded with zero rows to `rows` and is one
    device's shard of a call: up to n consecutive batches whose arrays have
    the same trailing shapes and dtypes make one call on (n * rows, ...)
    arrays split over the n devices. A call with fewer batches (at the end
    of the stream, or before a batch of other shapes) fills the idle
    devices with copies of its first batch, whose outputs are dropped. So a
    batch's outputs do not depend on the device count. The next call is
    dispatched before the outputs of the last one are copied back.

    Args:
      fn: jitted (params, *arrays) -> pytree of arrays with (n * rows) rows
        computed row by row (no mixing of rows).
      params: its parameters, replicated with `replicate`.
      batches: the inputs, each an array or a tuple of arrays.
      rows: rows of every batch after padding (the batch size).

    Yields:
      (outputs, B) per input batch, in order: the pytree of `fn`'s outputs
      as numpy arrays holding the batch's B rows.

    Raises:
      ValueError: for a batch of more than `rows` rows, or arrays of a
        batch with different numbers of rows.
    """
    if rows < 1:
      raise ValueError(f"rows={rows}; must be >= 1")
    pending = None
    for group in self._groups(batches, rows):
      launched = self._launch(fn, params, group, rows)
      if pending is not None:
        yield from self._fetch(pending, rows)
      pending = launched
    if pending is not None:
      yield from self._fetch(pending, rows)

  def _groups(self, batches, rows: int
              ) -> Iterator[list[tuple[tuple[np.ndarray, ...], int]]]:
    """Up to n consecutive (padded arrays, B) of the same shapes and
    dtypes at a time."""
    group, signature = [], None
    for batch in batches:
      arrays, size = self._padded(batch, rows)
      key = tuple((a.shape[1:], a.dtype) for a in arrays)
      if group and (key != signature or len(group) == self.num_devices):
        yield group
        group = []
      group.append((arrays, size))
      signature = key
    if group:
      yield group

  @staticmethod
  def _padded(batch, rows: int) -> tuple[tuple[np.ndarray, ...], int]:
    """(the batch's arrays padded with zero rows to `rows`, its rows B)."""
    arrays = tuple(np.asarray(a) for a in (
        batch if isinstance(batch, tuple) else (batch,)))
    sizes = {a.shape[0] for a in arrays}
    if len(sizes) != 1:
      raise ValueError(f"the arrays of a batch have different numbers of "
                       f"rows: {sorted(sizes)}")
    size = sizes.pop()
    if size > rows:
      raise ValueError(f"a batch has {size} rows, more than "
                       f"batch_size={rows}")
    if size == rows:
      return arrays, size
    return tuple(np.concatenate(
        [a, np.zeros((rows - size,) + a.shape[1:], a.dtype)])
                 for a in arrays), size

  def _launch(self, fn, params, group, rows: int) -> tuple[Any, list[int]]:
    """Dispatches one call on `group` (<= n padded batches)."""
    parts = [arrays for arrays, _ in group]
    parts += [parts[0]] * (self.num_devices - len(parts))
    stacked = [np.concatenate(column) if len(column) > 1 else column[0]
               for column in zip(*parts)]
    outputs = fn(params, *(jax.device_put(a, self.batch) for a in stacked))
    return outputs, [size for _, size in group]

  @staticmethod
  def _fetch(pending, rows: int) -> Iterator[tuple[Any, int]]:
    outputs, sizes = pending
    host = jax.tree_util.tree_map(np.asarray, outputs)
    for d, size in enumerate(sizes):
      yield jax.tree_util.tree_map(
          lambda a, d=d, size=size: a[d * rows:d * rows + size], host), size
