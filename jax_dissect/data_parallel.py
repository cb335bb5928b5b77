"""Data parallelism over a process's local devices, and the `devices` option.

A forward pass (the target's activations, CLIP's image and text towers)
runs each batch sharded over a 1-D mesh of local devices: the parameters
are replicated on every device once, each device computes its rows of the
batch, and a batch whose size does not divide by the device count is
padded with zero rows that the caller drops.

  dp = DataParallel("auto")              # all local devices
  params = dp.replicate(params)          # once
  x = dp.put_batch(batch, dp.padded_size(batch_size))
  out = jitted(params, x)                # sharded like x over the devices

The similarity kernels use the same option: `kernel_devices` gives the
devices of every process (the global mesh) for the same `devices` value.
The mesh of a forward pass holds only local devices, so each process of a
multi-process run embeds its own slice of the probe set with no
communication.
"""

from __future__ import annotations

from typing import Any, Sequence

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

  def padded_size(self, batch_size: int) -> int:
    """`batch_size` rounded up to a multiple of the device count."""
    n = self.num_devices
    return -(-batch_size // n) * n

  def put_batch(self, batch: np.ndarray, size: int) -> jax.Array:
    """(B, ...) rows padded with zeros to (size, ...), split over devices.

    Raises:
      ValueError: if B > size or size does not divide by the device count.
    """
    batch = np.asarray(batch)
    rows = batch.shape[0]
    if rows > size or size % self.num_devices:
      raise ValueError(f"a batch of {rows} rows cannot be padded to {size} "
                       f"rows over {self.num_devices} device(s)")
    if rows < size:
      pad = np.zeros((size - rows,) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, pad])
    return jax.device_put(batch, self.batch)
