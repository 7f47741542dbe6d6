"""Pooling inputs whose sharding is part of their type (explicit mesh axes).

``jax.make_mesh`` makes explicit axes by default: JAX then types the
sharding of every intermediate while tracing and rejects slices, pads and
reshapes whose result does not split evenly over the mesh, such as the
strided taps of a 3x3/2 window. A pooling does not need typed
intermediates: XLA partitions it with halo exchanges (see README,
"Sharding"). So each public function runs its body with the input's
explicit axes turned into automatic ones (``jax.sharding.auto_axes``) and
types its result as the input is: every dim keeps its mesh axes where its
new size still splits evenly over them, and a result of another rank keeps
those of its leading (batch) dim.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar, overload

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

F = TypeVar("F", bound=Callable[..., Any])


def _explicit_sharding(x: Any) -> NamedSharding | None:
  """``x``'s sharding if it splits ``x`` over explicit mesh axes."""
  try:
    sharding = getattr(jax.typeof(x), "sharding", None)
  except TypeError:
    return None
  if not isinstance(sharding, NamedSharding):
    return None
  mesh = sharding.mesh
  explicit = {name for name, kind in zip(mesh.axis_names, mesh.axis_types)
              if kind == AxisType.Explicit}
  if not explicit or not any(_names(entry) & explicit
                             for entry in sharding.spec):
    return None
  return sharding


def _names(entry) -> set[str]:
  if entry is None or entry is PartitionSpec.UNCONSTRAINED:
    return set()
  return {entry} if isinstance(entry, str) else set(entry)


def _result_spec(shape: tuple[int, ...], in_shape: tuple[int, ...],
                 sharding: NamedSharding) -> PartitionSpec:
  spec = list(sharding.spec) + [None] * (len(in_shape) - len(sharding.spec))
  if len(shape) != len(in_shape):
    spec = spec[:1] + [None] * (len(shape) - 1)
  parts = []
  for size, entry in zip(shape, spec):
    ways = math.prod(sharding.mesh.shape[name] for name in _names(entry))
    parts.append(entry if entry is not None and size % ways == 0 else None)
  return PartitionSpec(*parts)


@overload
def partitioned(fn: F, *, arrays: int = 1) -> F:
  ...


@overload
def partitioned(fn: None = None, *, arrays: int = 1) -> Callable[[F], F]:
  ...


def partitioned(fn: F | None = None, *,
                arrays: int = 1) -> F | Callable[[F], F]:
  """Lets ``fn`` pool inputs split over explicit mesh axes.

  Args:
    fn: a pooling function whose first ``arrays`` positional arguments are
      arrays; the first one's sharding types the result.
    arrays: how many leading positional arguments are arrays.

  Returns:
    ``fn``, unchanged for inputs that are not split over explicit axes.
  """
  if fn is None:
    return functools.partial(partitioned, arrays=arrays)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    sharding = _explicit_sharding(args[0])
    if sharding is None:
      return fn(*args, **kwargs)
    inputs, rest = args[:arrays], args[arrays:]
    body = lambda *inputs: fn(*inputs, *rest, **kwargs)
    avals = [jax.typeof(a) for a in inputs]
    out = jax.eval_shape(body, *[jax.ShapeDtypeStruct(a.shape, a.dtype)
                                 for a in avals])
    specs = jax.tree.map(
        lambda o: _result_spec(o.shape, avals[0].shape, sharding), out)
    mesh = sharding.mesh
    if isinstance(mesh, jax.sharding.Mesh):
      mesh = mesh.abstract_mesh
    explicit = tuple(name for name, kind in zip(mesh.axis_names,
                                                mesh.axis_types)
                     if kind == AxisType.Explicit)
    with jax.sharding.use_abstract_mesh(mesh):
      return jax.sharding.auto_axes(body, axes=explicit,
                                    out_sharding=specs)(*inputs)

  return wrapper
