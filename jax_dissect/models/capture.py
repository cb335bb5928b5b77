"""Capture and pool the outputs of named layers of any Flax module.

Works with linen modules (and their variables) and nnx modules (with their
own state, or a given nnx.State or pure dict of it). A layer is a submodule,
named by its dotted path from the root module ("conv1", "layer4.2.conv3",
"vit.encoder.layer.3.output"; nnx list items by index, "blocks.0"); its
captured value is the output of its `__call__` (the last call if a module
is called more than once). Capture and pooling run in one jitted function,
so full feature maps stay on the device.

The jitted function always runs the whole model and keeps its output (a
per-row sum of it is one more output), whichever layers are asked for: XLA
compiles a model cut short after the last wanted layer differently (other
fusions and algorithms), which changed a layer's activations by up to
2e-5 between a capture of it alone and with deeper layers. So a layer's
rows are the same bits whatever other layers are captured with it (a cache
entry recomputed alone equals the one computed with the others), at the
cost of the layers after the deepest wanted one. How layers are recorded:

- linen, default: `module.apply(..., capture_intermediates=filter)` with a
  filter for just the requested paths;
- linen with `apply_fn(variables, images)` (any function that applies the
  module, e.g. a Hugging Face model's `__call__` or a custom method):
  `flax.linen.intercept_methods`;
- nnx: the model is rebuilt inside the traced function with `nnx.merge` and
  its submodules' calls are recorded (see capture_nnx.py); `apply_fn(model,
  images)` replaces the default `model(images)`.

A layer returning a 1-tuple (Hugging Face layers return `(hidden_states,)`)
or a Hugging Face ModelOutput is captured through its first element, the
hidden state (a ModelOutput's first non-None field, e.g. last_hidden_state).
Other tuples and non-array outputs are not capturable. Pooling:

- (B, H, W, C) conv maps are pooled over space: "avg" (alias "mean") or "max";
- (B, T, C) token maps take the CLS token, index 0 (token_pool="cls"), the
  mean over all T tokens, CLS included ("mean"), the mean or max over the
  patch tokens alone ("patch_mean", "patch_max": the tokens after the
  model's prefix tokens -- CLS, registers -- which `ModelSpec.prefix_tokens`
  names), or one prefix token by its name ("reg0"; "token:i" is token i).
  `canonical_token_pool(name, prefix_tokens)` turns a name into the form
  the capture takes ("cls", "mean", "patch_mean:<n>", "patch_max:<n>",
  "token:<i>");
- (B, C) outputs are kept.

`iter_activations` walks a whole probe set in fixed-size batches and yields
pooled numpy batches; `collect_activations` gathers them into
{layer: (N, C) float32 numpy}. Both run each batch data-parallel over the
local devices (jax_dissect.runtime.data_parallel: parameters replicated once,
batch rows split over the devices) and can compute in bfloat16 or float16
(`compute_dtype`; the pooled rows are float32 either way).
"""

from __future__ import annotations

import difflib
import functools
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from absl import logging
from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jax_dissect.models import capture_nnx
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import precision
from jax_dissect.runtime import progress as progress_lib
from jax_dissect.runtime import xla_cpu

POOL_MODES = ("avg", "max")
POOL_ALIASES = {"mean": "avg"}
TOKEN_POOL_MODES = ("cls", "mean", "patch_mean", "patch_max")
# The prefix tokens of a model that does not name its own: the CLS token.
DEFAULT_PREFIX_TOKENS = ("cls",)
_CALL = "__call__"

# A linen or nnx module.
Module = nn.Module | nnx.Module


def canonical_pool(pool: str) -> str:
  """Returns "avg" or "max" for a pooling mode name (accepts alias "mean")."""
  mode = POOL_ALIASES.get(pool, pool)
  if mode not in POOL_MODES:
    raise ValueError(f"pool={pool!r}; allowed: {list(POOL_MODES)} "
                     f"(or aliases {sorted(POOL_ALIASES)})")
  return mode


def canonical_token_pool(token_pool: str,
                         prefix_tokens: Sequence[str] | None = None) -> str:
  """The capture's form of a token pooling of (B, T, C) token maps.

  Args:
    token_pool: "cls" (token 0), "mean" (all tokens), "patch_mean" /
      "patch_max" (the tokens after the prefix tokens), a name in
      `prefix_tokens` (that token), or a canonical form ("token:<i>",
      "patch_mean:<n>", "patch_max:<n>", as returned here).
    prefix_tokens: the names of the model's tokens before its patch tokens,
      in order (default DEFAULT_PREFIX_TOKENS: one CLS token).

  Returns:
    "cls", "mean", "patch_mean:<n>", "patch_max:<n>" (n prefix tokens
    skipped) or "token:<i>" (i >= 1; token 0 is "cls").

  Raises:
    ValueError: naming the allowed values.
  """
  prefix = tuple(DEFAULT_PREFIX_TOKENS if prefix_tokens is None
                 else prefix_tokens)
  name = str(token_pool)
  if name in ("cls", "mean"):
    return name
  if name in ("patch_mean", "patch_max"):
    return f"{name}:{len(prefix)}"
  if name in prefix:
    index = prefix.index(name)
    return "cls" if index == 0 else f"token:{index}"
  mode, _, number = name.partition(":")
  if mode in ("token", "patch_mean", "patch_max") and number.isdigit():
    if mode == "token" and int(number) == 0:
      return "cls"
    return f"{mode}:{int(number)}"
  names = [n for n in prefix if n not in TOKEN_POOL_MODES]
  raise ValueError(f"token_pool={token_pool!r}; allowed: "
                   f"{', '.join(TOKEN_POOL_MODES + tuple(names))} (the "
                   f"model's prefix tokens: {', '.join(prefix) or 'none'}), "
                   "or token:<i>")


def _pool_tokens(value: Any, token_pool: str, layer: str) -> Any:
  """(B, T, C) -> (B, C) by a canonical token pooling (see above)."""
  if token_pool == "cls":
    return value[:, 0, :]
  if token_pool == "mean":
    return jnp.mean(value, 1)
  mode, _, number = token_pool.partition(":")
  index, tokens = int(number), value.shape[1]
  if mode == "token":
    if index >= tokens:
      raise ValueError(f"layer {layer!r} has {tokens} tokens; token_pool="
                       f"token:{index} is out of range")
    return value[:, index, :]
  if index >= tokens:
    raise ValueError(f"layer {layer!r} has {tokens} tokens, none after its "
                     f"{index} prefix tokens: token_pool={mode} has no patch "
                     "tokens to pool")
  patches = value[:, index:, :]
  return jnp.mean(patches, 1) if mode == "patch_mean" else jnp.max(patches, 1)


def _flatten_calls(intermediates: Mapping[str, Any],
                   prefix: tuple[str, ...] = ()) -> dict[str, Any]:
  """{dotted path: last __call__ output} from an intermediates collection."""
  out = {}
  for name, value in intermediates.items():
    if name == _CALL:
      if prefix:  # The root module's own output is not a layer.
        out[".".join(prefix)] = value[-1]
    elif isinstance(value, Mapping):
      out.update(_flatten_calls(value, prefix + (name,)))
  return out


def _is_array(value: Any) -> bool:
  return hasattr(value, "ndim") and hasattr(value, "shape")


def _unwrap(value: Any) -> Any | None:
  """The array a layer output stands for, or None if it is not capturable.

  An array is itself; a Hugging Face ModelOutput gives its first non-None
  field; a tuple/list with a single non-None element gives that element.
  """
  if _is_array(value):
    return value
  if callable(getattr(value, "to_tuple", None)):  # transformers ModelOutput.
    items = [v for v in value.to_tuple() if v is not None]
  elif isinstance(value, (tuple, list)):
    items = [v for v in value if v is not None]
    if len(items) != 1:
      return None
  else:
    return None
  return items[0] if items and _is_array(items[0]) else None


def _describe(value: Any) -> str:
  """A short description of a non-array layer output, for errors."""
  kind = type(value).__name__
  if isinstance(value, (tuple, list)):
    shapes = ", ".join(str(tuple(v.shape)) if _is_array(v) else
                       type(v).__name__ for v in value)
    return f"a {kind} of {len(value)} values ({shapes})"
  return f"a {kind}"


def layer_array(value: Any, layer: str = "output") -> Any:
  """The array captured for one layer output (see `_unwrap`).

  Raises:
    ValueError: naming the layer and what it outputs, if it is not an
      array, a 1-tuple of one or a Hugging Face ModelOutput.
  """
  array = _unwrap(value)
  if array is None:
    raise ValueError(
        f"layer {layer!r} outputs {_describe(value)}, not an array; "
        "capturable outputs are an array, a 1-tuple of one, or a Hugging "
        "Face ModelOutput (its first field); capture one of its submodules "
        "instead")
  return array


class _Static:
  """Hashable handle of a linen module or nnx GraphDef, for jit caches.

  Hashable modules compare by value (equal modules share compiled
  functions); unhashable ones (e.g. Hugging Face modules, whose config is
  unhashable) by identity.
  """

  def __init__(self, value: Any):
    self.value = value
    try:
      self._hash, self._by_id = hash(value), False
    except TypeError:
      self._hash, self._by_id = id(value), True

  def __hash__(self) -> int:
    return self._hash

  def __eq__(self, other: Any) -> bool:
    if not isinstance(other, _Static):
      return NotImplemented
    if self._by_id or other._by_id:
      return self.value is other.value
    return type(self.value) is type(other.value) and self.value == other.value


def _split(module: Module, variables: Any) -> tuple[Any, Any]:
  """(static part, variables) of a linen or nnx module.

  For nnx the static part is the GraphDef and the variables an nnx.State:
  the module's own state when `variables` is None, `variables` when it is
  an nnx.State, else the module's state with the values of the pure dict
  `variables` (as from `nnx.state(model).to_pure_dict()`).
  """
  if isinstance(module, nnx.Module):
    graphdef, state = nnx.split(module)
    if variables is None:
      return graphdef, state
    if isinstance(variables, nnx.State):
      return graphdef, variables
    try:
      nnx.replace_by_pure_dict(state, variables)
    except (KeyError, ValueError, TypeError) as e:
      raise ValueError(f"variables do not fit the nnx module "
                       f"{type(module).__name__}: {e}") from e
    return graphdef, state
  if not isinstance(module, nn.Module):
    raise ValueError(f"module must be a Flax linen or nnx Module; got "
                     f"{type(module).__name__}")
  return module, variables


def _record(static: Any, variables: Any, images: Any,
            wanted: frozenset[str] | None, apply_fn: Callable | None,
            apply_kwargs: Mapping[str, Any],
            root: list[Any] | None = None) -> dict[str, Any]:
  """Runs the model; {path: raw output} of wanted layers (all if None).

  Called inside a traced function; the dict is in the order of the first
  outputs (a block's children before the block), root excluded. The
  model's own output is appended to `root` when given.
  """
  root = [] if root is None else root
  if not isinstance(static, nn.Module):  # nnx GraphDef.
    model = nnx.merge(static, variables)
    with capture_nnx.recording_calls(model, wanted) as found:
      if apply_fn is None:
        root.append(model(images, **apply_kwargs))
      else:
        root.append(apply_fn(model, images, **apply_kwargs))
    return dict(found)

  order = []

  def path_of(mdl: nn.Module) -> str:
    return ".".join(mdl.scope.path) if mdl.scope is not None else ""

  if apply_fn is not None:
    found = {}

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == _CALL:
        path = path_of(context.module)
        if path and (wanted is None or path in wanted):
          found[path] = out
      return out

    with nn.intercept_methods(interceptor):
      root.append(apply_fn(variables, images, **apply_kwargs))
    return found

  def keep(mdl: nn.Module, method_name: str) -> bool:
    if method_name != _CALL:
      return False
    path = path_of(mdl)
    if wanted is not None and path not in wanted:
      return False
    if path and path not in order:
      order.append(path)
    return True

  out, state = static.apply(variables, images, capture_intermediates=keep,
                            mutable=["intermediates"], **apply_kwargs)
  root.append(out)
  found = _flatten_calls(state.get("intermediates", {}))
  return {path: found[path] for path in order if path in found}


def _list_layers(static: Any, variables: Any, input_shape: Sequence[int],
                 input_dtype: Any, apply_fn: Callable | None,
                 apply_kwargs: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  names = []  # Filled at trace time, in output order.

  def capture_all(v, x):
    found = _record(static, v, x, None, apply_fn, apply_kwargs)
    arrays = []
    for path, value in found.items():
      array = _unwrap(value)
      if array is not None:
        names.append(path)
        arrays.append(array)
    return arrays

  shapes = jax.eval_shape(capture_all, variables,
                          jax.ShapeDtypeStruct(tuple(input_shape),
                                               input_dtype))
  return {name: tuple(s.shape) for name, s in zip(names, shapes)}


def list_layers(module: Module, variables: Any = None,
                input_shape: Sequence[int] = (1, 224, 224, 3),
                input_dtype: Any = jnp.float32, *,
                apply_fn: Callable | None = None,
                **apply_kwargs) -> dict[str, tuple[int, ...]]:
  """Capturable layer paths of `module` and the shapes of their outputs.

  Traced abstractly (jax.eval_shape): nothing is computed.

    list_layers(cnn, variables, (1, 32, 32, 3))
    # {"conv1": (1, 32, 32, 16), ..., "head": (1, 10)}

  Args:
    module: a Flax linen module, or an nnx module.
    variables: linen: its variables (arrays or ShapeDtypeStructs); nnx:
      None (the module's own state), an nnx.State or its pure dict.
    input_shape: shape of the input batch, e.g. (B, H, W, 3).
    input_dtype: dtype of the input batch.
    apply_fn: optional function running the model: linen
      `apply_fn(variables, images, **apply_kwargs)`, nnx
      `apply_fn(model, images, **apply_kwargs)`. Default: `module.apply(
      variables, images, **apply_kwargs)` / `model(images, **apply_kwargs)`.
    **apply_kwargs: extra keyword arguments of the call.

  Returns:
    {dotted path: output shape} for every submodule whose `__call__`
    returns a capturable array (see `layer_array`), in the order the
    outputs are produced (a block's children before the block).

  Raises:
    ValueError: if `module` is not a Flax module or nnx variables do not
      fit it.
  """
  static, variables = _split(module, variables)
  return _list_layers(static, variables, input_shape, input_dtype, apply_fn,
                      apply_kwargs)


def unknown_layer_error(unknown: Sequence[str],
                        valid: Sequence[str]) -> ValueError:
  """A ValueError naming `unknown` layers, listing `valid` nearest first
  (as many as fit a line of about 300 characters; list_layers has all)."""
  lines = []
  for name in unknown[:3]:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.0)
    lines.append(f"{name!r} (closest: {', '.join(close)})")
  if len(unknown) > 3:
    lines.append(f"{len(unknown) - 3} more")
  nearest = difflib.get_close_matches(unknown[0], valid, n=len(valid),
                                      cutoff=0.0)
  ordered = nearest + [v for v in valid if v not in nearest]
  head = f"unknown layer(s): {'; '.join(lines)}. Valid layers "
  shown = []
  for name in ordered:
    if len(head) + len(", ".join(shown + [name])) > 230:
      break
    shown.append(name)
  rest = (f", ... (list_layers gives all {len(valid)})"
          if len(shown) < len(ordered) else "")
  return ValueError(f"{head}({len(valid)}), nearest first: "
                    f"{', '.join(shown)}{rest}")


def _rank_hint(shape: tuple[int, ...]) -> str:
  """How to make an output of unsupported rank poolable."""
  if len(shape) <= 1:
    return ("wrap the layer in a module that returns x[:, None] (B, 1), or "
            "capture another layer")
  return ("capture a submodule with one of these ranks, or wrap the layer in "
          "a module that reshapes its output, e.g. x.reshape(x.shape[0], -1, "
          "x.shape[-1]) to pool it as tokens with token_pool='mean', or "
          "x.reshape(x.shape[0], -1) to keep every value as a neuron")


def pool_output(value: Any, pool: str = "avg", layer: str = "output",
                token_pool: str = "cls") -> jax.Array:
  """Reduces one layer output to (B, C) float32.

  Args:
    value: (B, H, W, C), (B, T, C) or (B, C); or a 1-tuple / Hugging Face
      ModelOutput holding one (see `layer_array`).
    pool: "avg"/"mean" or "max", for (B, H, W, C).
    layer: name used in the error message.
    token_pool: for (B, T, C): "cls" (token 0), "mean" (over all tokens)
      or a canonical form of `canonical_token_pool` ("patch_mean:1": the
      mean of the tokens after one prefix token).

  Raises:
    ValueError: for outputs that are not arrays or have another rank,
      saying what was found and how to make it poolable.
  """
  mode = canonical_pool(pool)
  token_pool = canonical_token_pool(token_pool)
  value = layer_array(value, layer).astype(jnp.float32)
  if value.ndim == 4:
    return jnp.mean(value, (1, 2)) if mode == "avg" else jnp.max(value, (1, 2))
  if value.ndim == 3:
    return _pool_tokens(value, token_pool, layer)
  if value.ndim == 2:
    return value
  raise ValueError(
      f"layer {layer!r} outputs shape {tuple(value.shape)} (rank "
      f"{value.ndim}); pooling supports (B, H, W, C) conv maps (pool='avg' "
      "or 'max' over H, W), (B, T, C) token maps (token_pool='cls', 'mean', "
      f"'patch_mean' or 'patch_max') and (B, C) vectors. To dissect it, "
      f"{_rank_hint(tuple(value.shape))}")


def _record_layers(static: Any, variables: Any, images: Any,
                   layers: tuple[str, ...], apply_fn: Callable | None,
                   apply_kwargs: Mapping[str, Any]) -> dict[str, Any]:
  """`_record` of exactly `layers`, plus the model's output per row under
  `ROOT` (see the module's docstring); an unknown layer raises a ValueError
  listing the valid layers, nearest first. Called inside a traced
  function."""
  root = []
  found = _record(static, variables, images, frozenset(layers), apply_fn,
                  apply_kwargs, root)
  missing = [l for l in layers if l not in found]
  if missing:
    valid = list(_list_layers(static, variables, images.shape, images.dtype,
                              apply_fn, apply_kwargs))
    raise unknown_layer_error(missing, valid)
  return {**found, ROOT: _per_row(root[0] if root else None,
                                  images.shape[0])}


# The key of the model's own output (summed per row) among the outputs of
# the jitted captures; not a layer path (those are never empty).
ROOT = ""


def _leaves(value: Any) -> list[Any]:
  """The arrays in a model's output (arrays, tuples, dicts, ModelOutputs)."""
  if _is_array(value):
    return [value]
  if callable(getattr(value, "to_tuple", None)):
    value = value.to_tuple()
  if isinstance(value, Mapping):
    value = list(value.values())
  if isinstance(value, (tuple, list)):
    return [a for v in value for a in _leaves(v)]
  return []


def _per_row(output: Any, rows: int) -> jax.Array:
  """(rows,) float32: the sum of each row of the model's output (its arrays
  with `rows` rows); keeps the whole model in the compiled program."""
  total = jnp.zeros((rows,), jnp.float32)
  for leaf in _leaves(output):
    if leaf.ndim >= 1 and leaf.shape[0] == rows:
      total = total + jnp.sum(leaf.astype(jnp.float32).reshape(rows, -1),
                              axis=1)
  return total


@functools.lru_cache(maxsize=32)
def _capture_fn(static: _Static, layers: tuple[str, ...], pool: str,
                token_pool: str, apply_fn: Callable | None,
                apply_items: tuple[tuple[str, Any], ...]):
  """A jitted (variables, images) -> {layer: (B, C)} for these settings."""
  apply_kwargs = dict(apply_items)

  def outputs(variables, images):
    found = _record_layers(static.value, variables, images, layers,
                           apply_fn, apply_kwargs)
    out = {l: layer_array(found[l], l) for l in layers}
    out[ROOT] = found[ROOT]
    return out

  def pooled(found):
    out = {l: pool_output(found[l], pool, l, token_pool) for l in layers}
    out[ROOT] = found[ROOT]
    return out

  # The pooling is its own program on the CPU (xla_cpu.forward_then_reduce).
  return xla_cpu.forward_then_reduce(outputs, pooled)


def _capture_for(static: Any, layers: tuple[str, ...], pool: str,
                 token_pool: str, apply_fn: Callable | None,
                 apply_kwargs: Mapping[str, Any]):
  """The (cached) jitted capture of a split module (see `_capture_fn`)."""
  if not layers:
    raise ValueError("layers is empty; name at least one layer")
  return _capture_fn(_Static(static), layers, canonical_pool(pool),
                     canonical_token_pool(token_pool), apply_fn,
                     tuple(sorted(apply_kwargs.items())))


def _capture_split(static: Any, variables: Any, images: Any,
                   layers: tuple[str, ...], pool: str, token_pool: str,
                   apply_fn: Callable | None,
                   apply_kwargs: Mapping[str, Any]) -> dict[str, jax.Array]:
  fn = _capture_for(static, layers, pool, token_pool, apply_fn, apply_kwargs)
  pooled = fn(variables, images)
  return {l: pooled[l] for l in layers}  # jit returns keys sorted.


def capture_pooled(module: Module, variables: Any, images: Any,
                   layers: Sequence[str], pool: str = "avg", *,
                   token_pool: str = "cls", apply_fn: Callable | None = None,
                   **apply_kwargs) -> dict[str, jax.Array]:
  """Pooled activations of `layers` for one batch, in one jitted call.

  Compiled once per (module, layers, pool, token_pool, apply_fn,
  apply_kwargs, input shape): hashable linen modules are compared by value,
  unhashable ones (Hugging Face modules) and nnx modules' graphs by
  identity, so pass the same module and apply_fn objects to reuse the
  compiled function. Numpy variables are copied to the device on every
  call: for repeated calls pass `jax.device_put(variables)`
  (collect_activations does).

  Args:
    module: a Flax linen module, or an nnx module.
    variables: linen: its variables; nnx: None (its own state), an
      nnx.State or a pure dict of one.
    images: a batch, (B, H, W, 3) for image models.
    layers: dotted layer paths (see `list_layers`).
    pool: "avg" (alias "mean") or "max" spatial pooling of conv maps.
    token_pool: pooling of (B, T, C) token maps (canonical_token_pool).
    apply_fn: optional function running the model (see `list_layers`).
    **apply_kwargs: extra keyword arguments of the call (hashable
      values), e.g. deterministic=True.

  Returns:
    {layer: (B, C) float32 jax.Array}, in the order of `layers`.

  Raises:
    ValueError: for an unknown layer (listing the valid ones, nearest
      first), a bad pool mode, or an output that cannot be pooled.
  """
  static, variables = _split(module, variables)
  return _capture_split(static, variables, images, tuple(layers), pool,
                        token_pool, apply_fn, apply_kwargs)


@functools.lru_cache(maxsize=32)
def _outputs_fn(static: _Static, layers: tuple[str, ...],
                apply_fn: Callable | None,
                apply_items: tuple[tuple[str, Any], ...]):
  """A jitted (variables, images) -> {layer: unpooled output}."""
  apply_kwargs = dict(apply_items)

  def capture(variables, images):
    found = _record_layers(static.value, variables, images, layers,
                           apply_fn, apply_kwargs)
    out = {l: layer_array(found[l], l) for l in layers}
    out[ROOT] = found[ROOT]
    return out

  return xla_cpu.forward_jit(capture)


def capture_outputs(module: Module, variables: Any, images: Any,
                    layers: Sequence[str], *,
                    apply_fn: Callable | None = None,
                    **apply_kwargs) -> dict[str, jax.Array]:
  """Unpooled outputs of `layers` for one batch (e.g. spatial maps).

  Compiled once per (module, layers, apply_fn, apply_kwargs, input shape),
  as `capture_pooled`; pad batches to one size to compile once.

  Args:
    module, variables, apply_fn, **apply_kwargs: as `capture_pooled`.
    images: a batch, (B, H, W, 3) for image models.
    layers: dotted layer paths (see `list_layers`).

  Returns:
    {layer: full output array (unwrapped as `layer_array`)}, in the order
    of `layers`.

  Raises:
    ValueError: for an unknown layer or a non-capturable output.
  """
  layers = tuple(layers)
  if not layers:
    raise ValueError("layers is empty; name at least one layer")
  static, variables = _split(module, variables)
  fn = _outputs_fn(_Static(static), layers, apply_fn,
                   tuple(sorted(apply_kwargs.items())))
  outputs = fn(variables, images)
  return {l: outputs[l] for l in layers}


@functools.lru_cache(maxsize=32)
def _module_in(static: _Static, compute_dtype: str) -> nn.Module:
  """The linen module computing in `compute_dtype`, one object per module
  (so an unhashable module's compiled capture is reused across calls)."""
  return precision.with_dtype(static.value, compute_dtype)


def _iter_batches(images: Any, batch_size: int) -> Iterator[np.ndarray]:
  if isinstance(images, (np.ndarray, jax.Array)):
    for start in range(0, images.shape[0], batch_size):
      yield images[start:start + batch_size]
  else:
    yield from images


def iter_activations(module: Module, variables: Any,
                     images: np.ndarray | Iterable[np.ndarray],
                     layers: Sequence[str], pool: str = "avg",
                     batch_size: int = 64, num_images: int | None = None,
                     log_every_s: float = 10.0, *, token_pool: str = "cls",
                     apply_fn: Callable | None = None,
                     devices: data_parallel.Devices = None,
                     compute_dtype: str = precision.DEFAULT,
                     **apply_kwargs) -> Iterator[dict[str, np.ndarray]]:
  """Yields pooled activations batch by batch, with bounded memory.

  Data parallel (`data_parallel.DataParallel.run_batches`): the variables
  are replicated on every device once, and each call computes one batch
  per device, padded with zero rows to `batch_size` (so the function
  compiles once; the padding rows are dropped). A batch's pooled rows are
  therefore the same bit for bit on any number of devices. One call's
  batches are on the devices at a time (plus the one being computed, as
  dispatch is asynchronous) and only the pooled (B, C) rows come back.
  Progress (counts, images/s, ETA) is logged with absl logging at most
  every `log_every_s` seconds.

  Args:
    module: a Flax linen module, or an nnx module.
    variables: linen: its variables; nnx: None (its own state), an
      nnx.State or a pure dict of one. Copied to the device once.
    images: an (N, H, W, 3) array, or an iterable of (B_i, H, W, 3) batches
      with B_i <= batch_size (e.g. a generator reading files).
    layers: dotted layer paths.
    pool: "avg" (alias "mean") or "max".
    batch_size: images per device per call (the rounding of the forward
      pass depends on it, not on the device count).
    num_images: total images, for the ETA when `images` is an iterable;
      taken from an array's first dimension.
    log_every_s: seconds between progress log lines.
    token_pool: pooling of (B, T, C) token maps (canonical_token_pool).
    apply_fn: optional function running the model (see `list_layers`).
    devices: local devices to split each batch over: None or "auto" for
      all, a count, or a list of devices.
    compute_dtype: "float32", "bfloat16" or "float16": floating variables
      are cast to it once, and linen modules with a `dtype` field compute
      in it; the pooled rows are float32.
    **apply_kwargs: extra keyword arguments of the call.

  Yields:
    {layer: (B_i, C) float32 numpy array} per input batch, in input order.

  Raises:
    ValueError: for a batch larger than `batch_size`, an unknown layer or a
      bad pool mode.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}; must be >= 1")
  layers, pool = tuple(layers), canonical_pool(pool)
  token_pool = canonical_token_pool(token_pool)
  if not layers:
    raise ValueError("layers is empty; name at least one layer")
  if num_images is None and isinstance(images, (np.ndarray, jax.Array)):
    num_images = int(images.shape[0])
  static, variables = _split(module, variables)
  if isinstance(static, nn.Module):
    static = _module_in(_Static(static), precision.check(compute_dtype))
  dp = data_parallel.DataParallel(devices)
  # Cast and copied to every device once, not once per batch.
  variables = dp.replicate(precision.cast_floating(variables, compute_dtype))
  progress = progress_lib.Progress("activations (images)", num_images,
                                   log_every_s)
  capture = _capture_for(static, layers, pool, token_pool, apply_fn,
                         apply_kwargs)

  def inputs():
    for batch in _iter_batches(images, batch_size):
      batch = np.asarray(batch)
      if np.issubdtype(batch.dtype, np.floating):
        batch = precision.cast_floating(batch, compute_dtype)
      yield batch

  for pooled, rows in dp.run_batches(capture, variables, inputs(),
                                     batch_size):
    out = {l: np.asarray(pooled[l], np.float32) for l in layers}
    precision.check_finite(out, compute_dtype, "activations")
    progress.update(rows)
    yield out
  elapsed = progress.elapsed
  logging.info("activations: %d images of %d layer(s) in %.1f s (%.1f "
               "images/s, %d device(s), %s)", progress.done, len(layers),
               elapsed, progress.done / max(elapsed, 1e-9), dp.num_devices,
               compute_dtype)


def collect_activations(module: Module, variables: Any,
                        images: np.ndarray | Iterable[np.ndarray],
                        layers: Sequence[str], pool: str = "avg",
                        batch_size: int = 64, num_images: int | None = None,
                        log_every_s: float = 10.0, *,
                        token_pool: str = "cls",
                        apply_fn: Callable | None = None,
                        devices: data_parallel.Devices = None,
                        compute_dtype: str = precision.DEFAULT,
                        **apply_kwargs) -> dict[str, np.ndarray]:
  """Pooled activations of a whole probe set (see `iter_activations`).

  Returns:
    {layer: (N, C) float32 numpy array}, rows in input order.

  Raises:
    ValueError: as `iter_activations`, and for an empty probe set.
  """
  layers = tuple(layers)
  chunks = {l: [] for l in layers}
  for pooled in iter_activations(module, variables, images, layers, pool,
                                 batch_size, num_images, log_every_s,
                                 token_pool=token_pool, apply_fn=apply_fn,
                                 devices=devices,
                                 compute_dtype=compute_dtype,
                                 **apply_kwargs):
    for l in layers:
      chunks[l].append(pooled[l])
  if not chunks[layers[0]]:
    raise ValueError("no images: the probe set is empty")
  return {l: np.concatenate(chunks[l]) for l in layers}
