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



class _MaskedPool(_Pool):
  """A pooling module whose function takes a ``mask``, given at the call."""

  def __call__(self, x: ArrayLike,
               mask: ArrayLike | None = None) -> jax.Array:
    """Pools ``x``, leaving out the elements where ``mask`` is False."""
    return self._pool(x, mask=mask)

class _LearnedPool(nn.Module):
  """A Linen module that owns its pooling function's learned parameter.

  The parameter, in the ``"params"`` collection under the function's name
  for it (``"p"``, ``"a"``, ``"gate"``), is made by ``init`` from the
  module's fields.
  """

  @nn.compact
  def __call__(self, x: ArrayLike) -> jax.Array:
    # The _layers class listed before this one supplies these.
    value = self.param(self.learned, lambda key: self.initial())
    return self._pool_with(x, value)


class MaxPool(_layers.MaxPool, _MaskedPool):
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


class AvgPool(_layers.AvgPool, _MaskedPool):
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


class AdaptiveAvgPool(_layers.AdaptiveAvgPool, _MaskedPool):
  """Adaptive average pooling, :func:`jaxpool.adaptive_avg_pool`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AdaptiveAvgPool
    >>> AdaptiveAvgPool((7, 7)).apply({}, jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class AdaptiveMaxPool(_layers.AdaptiveMaxPool, _MaskedPool):
  """Adaptive max pooling, :func:`jaxpool.adaptive_max_pool`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AdaptiveMaxPool
    >>> AdaptiveMaxPool((7, 7)).apply({}, jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class GlobalAvgPool(_layers.GlobalAvgPool, _MaskedPool):
  """Global average pooling, :func:`jaxpool.global_avg_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import GlobalAvgPool
    >>> GlobalAvgPool().apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class GlobalMaxPool(_layers.GlobalMaxPool, _MaskedPool):
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


class FractionalMaxPool(_layers.FractionalMaxPool, nn.Module):
  """Fractional max pooling, :func:`jaxpool.fractional_max_pool`, in Linen.

  Each call draws its key from the ``"pooling"`` RNG stream (give
  ``rngs={"pooling": key}`` to ``apply``), or takes explicit ``samples``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import FractionalMaxPool
    >>> pool = FractionalMaxPool(2, output_ratio=0.7)
    >>> pool.apply({}, jnp.ones((8, 32, 32, 3)),
    ...            rngs={"pooling": jax.random.key(0)}).shape
    (8, 22, 22, 3)

  References:
    Graham 2014, "Fractional Max-Pooling".
  """

  def __call__(self, x: ArrayLike, samples: ArrayLike | None = None
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    if samples is not None:
      return self._pool(x, samples=samples)
    return self._pool(x, key=self.make_rng("pooling"))


class StochasticPool(_layers.StochasticPool, nn.Module):
  """Stochastic pooling, :func:`jaxpool.stochastic_pool`, as a Linen module.

  In training each call draws its key from the ``"pooling"`` RNG stream;
  ``deterministic`` (evaluation, no key) is a field that the call may
  override, as ``flax.linen.Dropout``'s.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import StochasticPool
    >>> pool = StochasticPool((2, 2))
    >>> x = jnp.ones((8, 32, 32, 3))
    >>> pool.apply({}, x, rngs={"pooling": jax.random.key(0)}).shape
    (8, 16, 16, 3)
    >>> pool.apply({}, x, deterministic=True).shape
    (8, 16, 16, 3)

  References:
    Zeiler & Fergus 2013, "Stochastic Pooling for Regularization of Deep
    Convolutional Neural Networks".
  """

  def __call__(self, x: ArrayLike, deterministic: bool | None = None
               ) -> jax.Array:
    if deterministic is None:
      deterministic = self.deterministic
    key = None if deterministic else self.make_rng("pooling")
    return self._pool(x, key=key, deterministic=deterministic)


class SoftPool(_layers.SoftPool, _Pool):
  """SoftPool, :func:`jaxpool.soft_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import SoftPool
    >>> SoftPool(window_shape=(2, 2)).apply({}, jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Stergiou, Poppe & Kalliatakis 2021, "Refining activation downsampling
    with SoftPool".
  """


class LsePool(_layers.LsePool, _Pool):
  """Log-sum-exp pooling, :func:`jaxpool.lse_pool`, as a Linen module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import LsePool
    >>> LsePool(2.0).apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class AdaptiveAvgMaxPool(_layers.AdaptiveAvgMaxPool, _Pool):
  """timm's ``avgmax`` head, :func:`jaxpool.adaptive_avgmax_pool`, in Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AdaptiveAvgMaxPool
    >>> AdaptiveAvgMaxPool().apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 1, 1, 64)
  """


class AdaptiveCatAvgMaxPool(_layers.AdaptiveCatAvgMaxPool, _Pool):
  """timm's ``catavgmax`` head, :func:`jaxpool.adaptive_catavgmax_pool`, in
  Linen.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import AdaptiveCatAvgMaxPool
    >>> AdaptiveCatAvgMaxPool().apply({}, jnp.ones((8, 7, 7, 64))).shape
    (8, 1, 1, 128)
  """


class GemPool(_layers.GemPool, _LearnedPool):
  """GeM pooling, :func:`jaxpool.gem_pool`, with ``p`` a learned parameter.

  ``p`` starts at ``p_init`` (3.0, as cirtorch's ``GeM``): one value, or
  one per channel with ``channels``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import GemPool
    >>> x = jnp.ones((8, 7, 7, 64))
    >>> variables = GemPool().init(jax.random.key(0), x)
    >>> variables["params"]["p"]
    Array(3., dtype=float32)
    >>> GemPool().apply(variables, x).shape
    (8, 64)

  References:
    Radenović, Tolias & Chum 2018, "Fine-tuning CNN Image Retrieval with No
    Human Annotation".
  """


class MixedPool(_layers.MixedPool, _LearnedPool):
  """Mixed max-average pooling, :func:`jaxpool.mixed_pool`, ``a`` learned.

  ``a`` starts at ``a_init`` (0.5): one value, or one per channel with
  ``channels``; it is not clipped to ``[0, 1]``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import MixedPool
    >>> x = jnp.ones((8, 32, 32, 3))
    >>> model = MixedPool(channels=3, window_shape=(2, 2))
    >>> variables = model.init(jax.random.key(0), x)
    >>> model.apply(variables, x).shape
    (8, 16, 16, 3)

  References:
    Lee, Gallagher & Tu 2016, "Generalizing Pooling Functions in
    Convolutional Neural Networks: Mixed, Gated, and Tree".
  """


class GatedPool(_layers.GatedPool, _LearnedPool):
  """Gated max-average pooling, :func:`jaxpool.gated_pool`, mask learned.

  The gating mask starts at zeros (a gate of 1/2): one mask of the window's
  shape, or one per channel with ``channels``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool.linen import GatedPool
    >>> x = jnp.ones((8, 32, 32, 3))
    >>> model = GatedPool((2, 2))
    >>> variables = model.init(jax.random.key(0), x)
    >>> model.apply(variables, x).shape
    (8, 16, 16, 3)

  References:
    Lee, Gallagher & Tu 2016, "Generalizing Pooling Functions in
    Convolutional Neural Networks: Mixed, Gated, and Tree".
  """


class _RoIPool(nn.Module):
  """A Linen module that pools boxes of a map: called on ``(x, boxes)``."""

  def __call__(self, x: ArrayLike, boxes: Any) -> jax.Array:
    return self._pool(x, boxes=boxes)


class _MultiScale(nn.Module):
  """A Linen module that pools boxes of a pyramid of maps."""

  def __call__(self, features: Sequence[ArrayLike], boxes: Any,
               image_shapes: Sequence[Sequence[int]]) -> jax.Array:
    return self._pool(
        features, boxes=boxes, image_shapes=image_shapes)


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
