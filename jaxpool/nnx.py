"""jaxpool's pooling functions as Flax NNX modules.

Each module's fields are its function's arguments other than ``x``, with the
same names and defaults; it has no parameters and no state (every field is
static), and calling it is one call of the function. They work in
``nnx.Sequential`` and inside models under ``nnx.jit``.

Example:
  >>> model = nnx.Sequential(nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0)),
  ...                        MaxPool((2, 2)), GlobalAvgPool())
"""

from __future__ import annotations

import flax.nnx as nnx
import jax
from jax.typing import ArrayLike

from jaxpool import _layers


class _Pool(nnx.Module):
  """An NNX module that applies one pooling function."""

  def __call__(self, x: ArrayLike) -> jax.Array:
    return self._pool(x)


class MaxPool(_layers.MaxPool, _Pool):
  """Max pooling, :func:`jaxpool.max_pool`, as an NNX module.

  Example:
    >>> MaxPool((2, 2))(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class MinPool(_layers.MinPool, _Pool):
  """Min pooling, :func:`jaxpool.min_pool`, as an NNX module.

  Example:
    >>> MinPool((3, 3), 2, 1)(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AvgPool(_layers.AvgPool, _Pool):
  """Average pooling, :func:`jaxpool.avg_pool`, as an NNX module.

  Example:
    >>> AvgPool((3, 3), 2, 1)(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class LPPool(_layers.LPPool, _Pool):
  """Power-average pooling, :func:`jaxpool.lp_pool`, as an NNX module.

  Example:
    >>> LPPool(2.0, (2, 2))(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AdaptiveAvgPool(_layers.AdaptiveAvgPool, _Pool):
  """Adaptive average pooling, :func:`jaxpool.adaptive_avg_pool`, in NNX.

  Example:
    >>> AdaptiveAvgPool((7, 7))(jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class AdaptiveMaxPool(_layers.AdaptiveMaxPool, _Pool):
  """Adaptive max pooling, :func:`jaxpool.adaptive_max_pool`, in NNX.

  Example:
    >>> AdaptiveMaxPool((7, 7))(jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class GlobalAvgPool(_layers.GlobalAvgPool, _Pool):
  """Global average pooling, :func:`jaxpool.global_avg_pool`, as an NNX module.

  Example:
    >>> GlobalAvgPool()(jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class GlobalMaxPool(_layers.GlobalMaxPool, _Pool):
  """Global max pooling, :func:`jaxpool.global_max_pool`, as an NNX module.

  Example:
    >>> GlobalMaxPool()(jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class SpatialPyramidPool(_layers.SpatialPyramidPool, _Pool):
  """Spatial pyramid pooling, :func:`jaxpool.spatial_pyramid_pool`, in NNX.

  Example:
    >>> SpatialPyramidPool()(jnp.ones((8, 16, 16, 64))).shape
    (8, 1344)

  References:
    He et al. 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks
    for Visual Recognition".
  """


class SppYolo(_layers.SppYolo, _Pool):
  """YOLO's spatial pyramid pooling, :func:`jaxpool.spp_yolo`, in NNX.

  Example:
    >>> SppYolo((5, 9, 13))(jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    He et al. 2014 (SPPNet), in YOLOv3-SPP's stride-1 form.
  """


class SPPF(_layers.SPPF, _Pool):
  """YOLOv5's fast SPP, :func:`jaxpool.sppf`, as an NNX module.

  Example:
    >>> SPPF(5, 3)(jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    Jocher et al., YOLOv5 (2020), ``models/common.py: SPPF``.
  """


class AdaptiveMaxPoolWithIndices(_layers.AdaptiveMaxPoolWithIndices, _Pool):
  """:func:`jaxpool.adaptive_max_pool_with_indices` as an NNX module.

  It returns ``(values, indices)``, the indices ready for
  :func:`jaxpool.max_unpool`.

  Example:
    >>> y, i = AdaptiveMaxPoolWithIndices((7, 7))(jnp.ones((8, 13, 13, 64)))
    >>> i.shape
    (8, 7, 7, 64)
  """
