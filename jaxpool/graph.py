"""Graph readouts in PyTorch Geometric's form: pooling each graph's nodes.

A batch of graphs is one array of nodes, ``x`` of shape ``(N, F)``, and a
vector ``batch`` of shape ``(N,)`` giving each node's graph. The readouts
here are ``torch_geometric.nn.global_add_pool``, ``global_mean_pool`` and
``global_max_pool`` with the same arguments, values and gradients (an
empty graph gives 0; the gradient of a max is shared among tied nodes, as
there). They are :func:`jaxpool.segment_pool` over the node axis, the
second-to-last of ``x`` (the only one for a 1-D ``x``), as in PyTorch
Geometric. The top-level ``jaxpool.global_*_pool`` are the spatial ones.

``size``, the number of graphs, sets the output's shape: pass it under
``jit`` (without it, it is ``batch.max() + 1``, read from a concrete
``batch``).

Example:
  >>> import jax.numpy as jnp
  >>> from jaxpool import graph
  >>> x = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
  >>> batch = jnp.array([0, 0, 1])
  >>> graph.global_mean_pool(x, batch).tolist()
  [[2.0, 3.0], [5.0, 0.0]]
  >>> graph.global_max_pool(x, batch, size=3).tolist()
  [[3.0, 4.0], [5.0, 0.0], [0.0, 0.0]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxpool._segment import segment_pool

__all__ = ("global_add_pool", "global_max_pool", "global_mean_pool")


def _readout(x: ArrayLike, batch: ArrayLike | None, size: int | None,
             method: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(f"x must have a node dim, got shape {x.shape}.")
  axis = 0 if x.ndim == 1 else x.ndim - 2
  nodes = jnp.moveaxis(x, axis, 0)
  if batch is None:
    # One graph of every node; PyTorch Geometric keeps the node dim (of
    # size 1) for x of up to 2 dims.
    ids = jnp.zeros(nodes.shape[:1], np.int32)
    y = segment_pool(nodes, ids, 1, method=method)
    y = jnp.moveaxis(y, 0, axis)
    return y if x.ndim <= 2 else jnp.squeeze(y, axis)
  batch = jnp.asarray(batch)
  if size is None:
    if isinstance(batch, jax.core.Tracer):
      raise ValueError(
          "size (the number of graphs) must be given when batch is traced "
          "(under jit): it sets the output's shape.")
    size = int(np.max(np.asarray(batch), initial=-1)) + 1
  return jnp.moveaxis(segment_pool(nodes, batch, size, method=method), 0,
                      axis)


def global_add_pool(x: ArrayLike, batch: ArrayLike | None = None,
                    size: int | None = None) -> jax.Array:
  """The sum of each graph's nodes: ``torch_geometric.nn.global_add_pool``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool import graph
    >>> x = jnp.array([[1.0], [3.0], [5.0]])
    >>> graph.global_add_pool(x, jnp.array([0, 0, 1])).ravel().tolist()
    [4.0, 5.0]

  Args:
    x: node features, ``(N, F)`` (or ``(N,)``, or ``(..., N, F)``).
    batch: the graph of each node, int ``(N,)``; ``None``: one graph.
    size: the number of graphs, a static int; default ``batch.max() + 1``.

  Returns:
    ``(size, F)``: each graph's sum, 0 for a graph without nodes.

  Raises:
    ValueError: for ``size`` missing under ``jit``, or a ``batch`` of the
      wrong shape.
  """
  return _readout(x, batch, size, "sum")


def global_mean_pool(x: ArrayLike, batch: ArrayLike | None = None,
                     size: int | None = None) -> jax.Array:
  """The mean of each graph's nodes: ``torch_geometric.nn.global_mean_pool``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool import graph
    >>> x = jnp.array([[1.0], [3.0], [5.0]])
    >>> graph.global_mean_pool(x, jnp.array([0, 0, 1])).ravel().tolist()
    [2.0, 5.0]

  Args:
    x: node features, ``(N, F)`` (or ``(N,)``, or ``(..., N, F)``).
    batch: the graph of each node, int ``(N,)``; ``None``: one graph.
    size: the number of graphs, a static int; default ``batch.max() + 1``.

  Returns:
    ``(size, F)``: each graph's mean, 0 for a graph without nodes.

  Raises:
    ValueError: for ``size`` missing under ``jit``, or a ``batch`` of the
      wrong shape.
  """
  return _readout(x, batch, size, "mean")


def global_max_pool(x: ArrayLike, batch: ArrayLike | None = None,
                    size: int | None = None) -> jax.Array:
  """The maximum of each graph's nodes: ``torch_geometric.nn.global_max_pool``.

  Each feature's gradient is shared equally among the nodes of the graph
  that equal its maximum, as PyTorch Geometric's (``scatter_reduce``
  ``"amax"``), except where a maximum is exactly 0: torch's backward there
  counts the zeros it reduced into as one more tie and passes on only
  ``ties / (ties + 1)`` of the gradient, while jaxpool passes on all of it.
  With ``batch=None`` PyTorch Geometric's ``x.max(dim)`` sends the gradient
  to one of the tied nodes; here it is still shared.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool import graph
    >>> x = jnp.array([[1.0], [3.0], [5.0]])
    >>> graph.global_max_pool(x, jnp.array([0, 0, 1])).ravel().tolist()
    [3.0, 5.0]

  Args:
    x: node features, ``(N, F)`` (or ``(N,)``, or ``(..., N, F)``).
    batch: the graph of each node, int ``(N,)``; ``None``: one graph.
    size: the number of graphs, a static int; default ``batch.max() + 1``.

  Returns:
    ``(size, F)``: each graph's maximum, 0 for a graph without nodes.

  Raises:
    ValueError: for ``size`` missing under ``jit``, or a ``batch`` of the
      wrong shape.
  """
  return _readout(x, batch, size, "max")
