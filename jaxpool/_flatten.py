"""Flattening feature maps into vectors, in PyTorch's order or JAX's."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxpool._sharding import partitioned
from jaxpool._spec import int_tuple, layout_axes

_ORDERS = ("chw", "hwc")


@partitioned
def flatten(x: ArrayLike, order: str = "chw", *,
            spatial_dims: int | None = None,
            channels_first: bool = False) -> jax.Array:
  """Flattens the channel and spatial dims of ``x`` into one, in ``order``.

  A classifier head ported from PyTorch flattens ``(N, C, H, W)`` maps with
  ``torch.flatten(x, 1)`` (or ``nn.Flatten()``, ``x.view(N, -1)``): channel
  slowest, then rows, then columns. The first ``nn.Linear``'s weight
  columns are in that order. ``order="chw"`` gives it from maps in either
  layout, so those weights load unchanged; ``order="hwc"`` gives the order
  of a plain ``x.reshape(N, -1)`` of channels-last maps (channels fastest),
  which a model trained in JAX usually has. For 1-D and 3-D maps the
  orders are the same: ``"chw"`` puts the channel first, then the spatial
  dims row-major; ``"hwc"`` puts it last.

  Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``. By default ``spatial_dims = x.ndim - 2``:
  one batch dim, ``(N, H, W, C)``; give ``spatial_dims`` for other batch
  ranks. The output is ``(*batch, C * prod(spatial))``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(8.0).reshape(1, 2, 2, 2)  # (N, H, W, C)
    >>> jaxpool.flatten(x)  # channel 0's map first, as torch.flatten on NCHW
    Array([[0., 2., 4., 6., 1., 3., 5., 7.]], dtype=float32)
    >>> jaxpool.flatten(x, "hwc")
    Array([[0., 1., 2., 3., 4., 5., 6., 7.]], dtype=float32)

  Args:
    x: the feature maps.
    order: ``"chw"`` (PyTorch's, channel slowest) or ``"hwc"`` (channel
      fastest).
    spatial_dims: the number of spatial dims; default ``x.ndim - 2``.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the flattened maps, of ``x``'s dtype.

  Raises:
    ValueError: for an unknown ``order``, ``spatial_dims < 1``, or ``x``
      with too few dims.
  """
  x = jnp.asarray(x)
  if order not in _ORDERS:
    raise ValueError(f"order must be one of {_ORDERS}, got {order!r}.")
  if spatial_dims is None:
    if x.ndim < 3:
      raise ValueError(
          f"x must be (N, *spatial, C) or (N, C, *spatial) with at least one "
          f"spatial dim, got shape {x.shape}; give spatial_dims for other "
          f"layouts.")
    rank = x.ndim - 2
  else:
    rank = int_tuple(spatial_dims, 1, "spatial_dims")[0]
  spatial, channel = layout_axes(x.shape, rank, channels_first)
  batch = min(channel, spatial[0])
  if (order == "chw") != bool(channels_first):
    # The channel moves to the other side of the spatial dims.
    x = jnp.moveaxis(x, channel, spatial[-1] if channels_first else batch)
  return x.reshape(x.shape[:batch] + (math.prod(x.shape[batch:]),))
