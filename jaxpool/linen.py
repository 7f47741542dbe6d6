"""jaxpool's pooling functions as Flax Linen modules.

Each module's fields are its function's arguments other than ``x``, with the
same names and defaults; it has no parameters and no state, and calling it is
one call of the function. They work in ``nn.Sequential``, under ``jax.jit``
of ``apply`` and in lifted transforms such as ``nn.scan`` and ``nn.vmap``.

Example:
  >>> model = nn.Sequential([nn.Conv(8, (3, 3)), MaxPool((2, 2)),
  ...                        GlobalAvgPool()])
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.typing import ArrayLike

from jaxpool import _layers


class _Pool(nn.Module):
  """A Linen module that applies one pooling function."""

  def __call__(self, x: ArrayLike) -> jax.Array:
    return self._pool(x)


class MaxPool(_layers.MaxPool, _Pool):
  """Max pooling, :func:`jaxpool.max_pool`, as a Linen module.

  Example:
    >>> MaxPool((2, 2)).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class MinPool(_layers.MinPool, _Pool):
  """Min pooling, :func:`jaxpool.min_pool`, as a Linen module.

  Example:
    >>> MinPool((3, 3), 2, 1).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AvgPool(_layers.AvgPool, _Pool):
  """Average pooling, :func:`jaxpool.avg_pool`, as a Linen module.

  Example:
    >>> AvgPool((3, 3), 2, 1).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class LPPool(_layers.LPPool, _Pool):
  """Power-average pooling, :func:`jaxpool.lp_pool`, as a Linen module.

  Example:
    >>> LPPool(2.0, (2, 2)).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AdaptiveAvgPool(_layers.AdaptiveAvgPool, _Pool):
  """Adaptive average pooling, :func:`jaxpool.adaptive_avg_pool`, in Linen.

  Example:
    >>> AdaptiveAvgPool((7, 7)).apply({}, jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class AdaptiveMaxPool(_layers.AdaptiveMaxPool, _Pool):
  """Adaptive max pooling, :func:`jaxpool.adaptive_max_pool`, in Linen.

  Example:
    >>> AdaptiveMaxPool((7, 7)).apply({}, jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class GlobalAvgPool(_layers.GlobalAvgPool, _Pool):
  """Global average pooling, :func:`jaxpool.global_avg_pool`, as a Linen module.

  Example:
    >>> GlobalAvgPool().apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class GlobalMaxPool(_layers.GlobalMaxPool, _Pool):
  """Global max pooling, :func:`jaxpool.global_max_pool`, as a Linen module.

  Example:
    >>> GlobalMaxPool().apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class SpatialPyramidPool(_layers.SpatialPyramidPool, _Pool):
  """Spatial pyramid pooling, :func:`jaxpool.spatial_pyramid_pool`, in Linen.

  Example:
    >>> SpatialPyramidPool().apply({}, jnp.ones((8, 16, 16, 64))).shape
    (8, 1344)

  References:
    He et al. 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks
    for Visual Recognition".
  """


class SppYolo(_layers.SppYolo, _Pool):
  """YOLO's spatial pyramid pooling, :func:`jaxpool.spp_yolo`, in Linen.

  Example:
    >>> SppYolo((5, 9, 13)).apply({}, jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    He et al. 2014 (SPPNet), in YOLOv3-SPP's stride-1 form.
  """


class SPPF(_layers.SPPF, _Pool):
  """YOLOv5's fast SPP, :func:`jaxpool.sppf`, as a Linen module.

  Example:
    >>> SPPF(5, 3).apply({}, jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    Jocher et al., YOLOv5 (2020), ``models/common.py: SPPF``.
  """


class AdaptiveMaxPoolWithIndices(_layers.AdaptiveMaxPoolWithIndices, _Pool):
  """:func:`jaxpool.adaptive_max_pool_with_indices` as a Linen module.

  It returns ``(values, indices)``, the indices ready for
  :func:`jaxpool.max_unpool`.

  Example:
    >>> y, i = AdaptiveMaxPoolWithIndices((7, 7)).apply(
    ...     {}, jnp.ones((8, 13, 13, 64)))
    >>> i.shape
    (8, 7, 7, 64)
  """
