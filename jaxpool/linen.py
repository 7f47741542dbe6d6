"""jaxpool's pooling functions as Flax Linen modules.

Each module's fields are its function's arguments other than ``x``, with the
same names and defaults; it has no parameters and no state, and calling it is
one call of the function. They work in ``nn.Sequential``, under ``jax.jit``
of ``apply`` and in lifted transforms such as ``nn.scan`` and ``nn.vmap``.

Example:
  >>> import flax.linen as nn
  >>> import jax
  >>> import jax.numpy as jnp
  >>> from jaxpool.linen import GlobalAvgPool, MaxPool
  >>> model = nn.Sequential([nn.Conv(8, (3, 3)), MaxPool((2, 2)),
  ...                        GlobalAvgPool()])
  >>> x = jnp.ones((4, 16, 16, 3))
  >>> variables = model.init(jax.random.key(0), x)
  >>> model.apply(variables, x).shape
  (4, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import MaxPool
    >>> MaxPool((2, 2)).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class MinPool(_layers.MinPool, _Pool):
  """Min pooling, :func:`jaxpool.min_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import MinPool
    >>> MinPool((3, 3), 2, 1).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AvgPool(_layers.AvgPool, _Pool):
  """Average pooling, :func:`jaxpool.avg_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AvgPool
    >>> AvgPool((3, 3), 2, 1).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class LPPool(_layers.LPPool, _Pool):
  """Power-average pooling, :func:`jaxpool.lp_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import LPPool
    >>> LPPool(2.0, (2, 2)).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AdaptiveAvgPool(_layers.AdaptiveAvgPool, _Pool):
  """Adaptive average pooling, :func:`jaxpool.adaptive_avg_pool`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AdaptiveAvgPool
    >>> AdaptiveAvgPool((7, 7)).apply({}, jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class AdaptiveMaxPool(_layers.AdaptiveMaxPool, _Pool):
  """Adaptive max pooling, :func:`jaxpool.adaptive_max_pool`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AdaptiveMaxPool
    >>> AdaptiveMaxPool((7, 7)).apply({}, jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class GlobalAvgPool(_layers.GlobalAvgPool, _Pool):
  """Global average pooling, :func:`jaxpool.global_avg_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import GlobalAvgPool
    >>> GlobalAvgPool().apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class GlobalMaxPool(_layers.GlobalMaxPool, _Pool):
  """Global max pooling, :func:`jaxpool.global_max_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import GlobalMaxPool
    >>> GlobalMaxPool().apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class SpatialPyramidPool(_layers.SpatialPyramidPool, _Pool):
  """Spatial pyramid pooling, :func:`jaxpool.spatial_pyramid_pool`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import SpatialPyramidPool
    >>> SpatialPyramidPool().apply({}, jnp.ones((8, 16, 16, 64))).shape
    (8, 1344)

  References:
    He et al. 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks
    for Visual Recognition".
  """


class SppYolo(_layers.SppYolo, _Pool):
  """YOLO's spatial pyramid pooling, :func:`jaxpool.spp_yolo`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import SppYolo
    >>> SppYolo((5, 9, 13)).apply({}, jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    He et al. 2014 (SPPNet), in YOLOv3-SPP's stride-1 form.
  """


class SPPF(_layers.SPPF, _Pool):
  """YOLOv5's fast SPP, :func:`jaxpool.sppf`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import SPPF
    >>> SPPF(5, 3).apply({}, jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    Jocher et al., YOLOv5 (2020), ``models/common.py: SPPF``.
  """


class MaxPoolWithIndices(_layers.MaxPoolWithIndices, _Pool):
  """:func:`jaxpool.max_pool_with_indices` as a Linen module.

  Calling it returns ``(values, indices)``, as PyTorch's
  ``MaxPool2d(..., return_indices=True)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import MaxPoolWithIndices
    >>> y, i = MaxPoolWithIndices((2, 2)).apply({}, jnp.ones((8, 32, 32, 3)))
    >>> y.shape, i.dtype
    ((8, 16, 16, 3), dtype('int32'))
  """


class MaxUnpool(_layers.MaxUnpool, nn.Module):
  """Max unpooling, :func:`jaxpool.max_unpool`, as a Linen module.

  ``spatial_shape`` is a field, or given at each call (PyTorch's
  ``output_size``) for maps whose size varies.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import MaxPoolWithIndices, MaxUnpool
    >>> x = jnp.ones((8, 32, 32, 3))
    >>> y, i = MaxPoolWithIndices((2, 2)).apply({}, x)
    >>> MaxUnpool().apply({}, y, i, x.shape[1:3]).shape
    (8, 32, 32, 3)
  """

  def __call__(self, x: ArrayLike, indices: ArrayLike,
               spatial_shape: Sequence[int] | None = None) -> jax.Array:
    return self._unpool(x, indices, spatial_shape)


class Flatten(_layers.Flatten, _Pool):
  """:func:`jaxpool.flatten` as a Linen module: PyTorch's ``nn.Flatten()``
  order (``"chw"``) from channels-last maps.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import Flatten
    >>> Flatten().apply({}, jnp.ones((8, 7, 7, 512))).shape
    (8, 25088)
  """


class BlurPool(_layers.BlurPool, _Pool):
  """Blur pooling, :func:`jaxpool.blur_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import BlurPool
    >>> BlurPool(4, 2).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Zhang 2019, "Making Convolutional Networks Shift-Invariant Again".
  """


class MaxBlurPool(_layers.MaxBlurPool, _Pool):
  """Max-blur pooling, :func:`jaxpool.max_blur_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import MaxBlurPool
    >>> MaxBlurPool(4, 2).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Zhang 2019, "Making Convolutional Networks Shift-Invariant Again".
  """


class ApsPool(_layers.ApsPool, _Pool):
  """Adaptive polyphase sampling, :func:`jaxpool.aps_pool`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import ApsPool
    >>> ApsPool(2, window_shape=2).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Chaman & Dokmanić 2021, "Truly Shift-Invariant Convolutional Neural
    Networks".
  """


class AdaptiveMaxPoolWithIndices(_layers.AdaptiveMaxPoolWithIndices, _Pool):
  """:func:`jaxpool.adaptive_max_pool_with_indices` as a Linen module.

  It returns ``(values, indices)``, the indices ready for
  :func:`jaxpool.max_unpool`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AdaptiveMaxPoolWithIndices
    >>> y, i = AdaptiveMaxPoolWithIndices((7, 7)).apply(
    ...     {}, jnp.ones((8, 13, 13, 64)))
    >>> i.shape
    (8, 7, 7, 64)
  """


class _RoIPool(nn.Module):
  """A Linen module that pools boxes of a map: called on ``(x, boxes)``."""

  def __call__(self, x: ArrayLike, boxes: Any) -> jax.Array:
    return self._pool_boxes(x, boxes)


class _MultiScale(nn.Module):
  """A Linen module that pools boxes of a pyramid of maps."""

  def __call__(self, features: Sequence[ArrayLike], boxes: Any,
               image_shapes: Sequence[Sequence[int]]) -> jax.Array:
    return self._pool_boxes(
        features, boxes, image_shapes)


class RoIPool(_layers.RoIPool, _RoIPool):
  """RoI max pooling, :func:`jaxpool.roi_pool`, as a Linen module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import RoIPool
    >>> x = jnp.ones((2, 32, 32, 8))
    >>> boxes = jnp.array([[0., 0., 0., 20., 12.], [1., 4., 4., 30., 30.]])
    >>> RoIPool(7, 0.5).apply({}, x, boxes).shape
    (2, 7, 7, 8)
  """


class RoIAlign(_layers.RoIAlign, _RoIPool):
  """RoI Align, :func:`jaxpool.roi_align`, as a Linen module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import RoIAlign
    >>> x = jnp.ones((2, 32, 32, 8))
    >>> boxes = jnp.array([[0., 0., 0., 20., 12.], [1., 4., 4., 30., 30.]])
    >>> RoIAlign(7, 0.5, 2).apply({}, x, boxes).shape
    (2, 7, 7, 8)
  """


class PSRoIPool(_layers.PSRoIPool, _RoIPool):
  """Position-sensitive RoI pooling, :func:`jaxpool.ps_roi_pool`, as a Linen module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import PSRoIPool
    >>> x = jnp.ones((1, 16, 16, 2 * 3 * 3))
    >>> boxes = jnp.array([[0., 0., 0., 12., 12.]])
    >>> PSRoIPool(3).apply({}, x, boxes).shape
    (1, 3, 3, 2)
  """


class PSRoIAlign(_layers.PSRoIAlign, _RoIPool):
  """Position-sensitive RoI Align, :func:`jaxpool.ps_roi_align`, as a Linen module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import PSRoIAlign
    >>> x = jnp.ones((1, 16, 16, 2 * 3 * 3))
    >>> boxes = jnp.array([[0., 0., 0., 12., 12.]])
    >>> PSRoIAlign(3, sampling_ratio=2).apply({}, x, boxes).shape
    (1, 3, 3, 2)
  """


class MultiScaleRoIAlign(_layers.MultiScaleRoIAlign, _MultiScale):
  """Multi-scale RoI Align, :func:`jaxpool.multi_scale_roi_align`, as a
  Linen module (torchvision's ``MultiScaleRoIAlign``); called on
  ``(features, boxes, image_shapes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import MultiScaleRoIAlign
    >>> features = [jnp.ones((1, 64, 64, 8)), jnp.ones((1, 32, 32, 8))]
    >>> boxes = [jnp.array([[0., 0., 40., 40.], [0., 0., 250., 250.]])]
    >>> MultiScaleRoIAlign(7, 2).apply({}, features, boxes, [(256, 256)]).shape
    (2, 7, 7, 8)
  """
