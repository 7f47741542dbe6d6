"""jaxpool's pooling functions as Equinox modules.

Each module's fields are its function's arguments other than ``x``, with the
same names and defaults, taken from the field lists that the Linen and NNX
modules use; every such field is static, so a module has no array leaves and
calling it is one call of the function. They work under ``eqx.filter_jit``
and ``eqx.filter_grad`` and in ``eqx.nn.Sequential``, whose ``key`` they
accept and do not use. Equinox layers take one example, channels first, with
no batch dim: pass ``channels_first=True`` (and ``spatial_dims`` to the global
poolings) and ``jax.vmap`` the model over a batch, or keep jaxpool's default
channels-last layout with any number of batch dims.

Requires Equinox: ``pip install jaxpool[equinox]``.

Example:
  >>> import equinox as eqx
  >>> import jax
  >>> import jax.numpy as jnp
  >>> from jaxpool.equinox import GlobalAvgPool, MaxPool
  >>> model = eqx.nn.Sequential([
  ...     eqx.nn.Conv2d(3, 8, 3, key=jax.random.key(0)),
  ...     MaxPool((2, 2), channels_first=True),
  ...     GlobalAvgPool(spatial_dims=2, channels_first=True)])
  >>> model(jnp.ones((3, 16, 16))).shape
  (8,)
  >>> jax.vmap(model)(jnp.ones((4, 3, 16, 16))).shape
  (4, 8)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
from jax.typing import ArrayLike

from jaxpool import _layers
from jaxpool._typing import IntOrSequence


class _Pool(eqx.Module):
  """An Equinox module that applies one pooling function.

  A subclass lists a ``_layers`` class first among its bases (after this
  one); its fields, the function's keywords, are declared here again as
  static Equinox fields with the same defaults and keyword-only marks, so
  that the module is a pytree without leaves and its configuration hashes
  into ``filter_jit``'s cache. A field the subclass annotates itself (a
  learnable parameter, say) is left as it declares it.
  """

  def __init_subclass__(cls, **kwargs: Any) -> None:
    super().__init_subclass__(**kwargs)
    layers = [base for base in cls.__mro__[1:]
              if issubclass(base, _layers.Layer) and base is not _layers.Layer]
    if cls.__dict__.get("_base", False):
      return  # A base for modules, itself without a field list.
    if not layers:
      raise TypeError(f"{cls.__name__} must also derive from a _layers class")
    own = dict(cls.__dict__.get("__annotations__", {}))
    annotations = {}
    for field in dataclasses.fields(layers[0]):
      name = field.name
      if name in own:
        continue
      setattr(cls, name, eqx.field(
          static=True, default=field.default,
          default_factory=field.default_factory, kw_only=field.kw_only))
      annotations[name] = field.type
    cls.__annotations__ = {**annotations, **own}

  def __call__(self, x: ArrayLike, *, key: jax.Array | None = None
               ) -> jax.Array:
    """Pools ``x``; ``key`` is accepted for ``eqx.nn.Sequential`` and unused."""
    del key
    return self._pool(x)  # type: ignore[attr-defined]


class _MaskedCall:
  """Mixed in before :class:`_Pool` for a function that takes a ``mask``:
  the mask is a call argument, not a field (it changes with every batch)."""

  def __call__(self, x: ArrayLike, mask: ArrayLike | None = None, *,
               key: jax.Array | None = None) -> jax.Array:
    """Pools ``x``, leaving out the elements where ``mask`` is False; ``key``
    is accepted for ``eqx.nn.Sequential`` and unused."""
    del key
    return self._pool(x, mask=mask)  # type: ignore[attr-defined]

class _LearnedPool(_Pool):
  """An Equinox module that owns its pooling function's learned parameter.

  The parameter is an array field named as the function's argument (``p``,
  ``a``, ``gate``), made at construction from the static fields unless
  given (``GemPool(p=jnp.array(2.0))``); it is the module's one leaf, so
  ``eqx.filter_grad`` and optax see it.
  """

  _base = True

  def __post_init__(self) -> None:
    # Called by the _layers class's __post_init__, after the fields are set:
    # the parameter, unless given, from them.
    if getattr(self, self.learned) is None:  # type: ignore[attr-defined]
      setattr(self, self.learned,  # type: ignore[attr-defined]
              self.initial())  # type: ignore[attr-defined]

  def __call__(self, x: ArrayLike, *, key: jax.Array | None = None
               ) -> jax.Array:
    """Pools ``x``; ``key`` is accepted for ``eqx.nn.Sequential`` and unused."""
    del key
    return self._pool_with(  # type: ignore[attr-defined]
        x, getattr(self, self.learned))  # type: ignore[attr-defined]


class MaxPool(_MaskedCall, _Pool, _layers.MaxPool):
  """Max pooling, :func:`jaxpool.max_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import MaxPool
    >>> MaxPool((2, 2))(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class MinPool(_Pool, _layers.MinPool):
  """Min pooling, :func:`jaxpool.min_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import MinPool
    >>> MinPool((3, 3), 2, 1)(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AvgPool(_MaskedCall, _Pool, _layers.AvgPool):
  """Average pooling, :func:`jaxpool.avg_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import AvgPool
    >>> AvgPool((3, 3), 2, 1)(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class LPPool(_Pool, _layers.LPPool):
  """Power-average pooling, :func:`jaxpool.lp_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import LPPool
    >>> LPPool(2.0, (2, 2))(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)
  """


class AdaptiveAvgPool(_MaskedCall, _Pool, _layers.AdaptiveAvgPool):
  """Adaptive average pooling, :func:`jaxpool.adaptive_avg_pool`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import AdaptiveAvgPool
    >>> AdaptiveAvgPool((7, 7))(jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class AdaptiveMaxPool(_MaskedCall, _Pool, _layers.AdaptiveMaxPool):
  """Adaptive max pooling, :func:`jaxpool.adaptive_max_pool`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import AdaptiveMaxPool
    >>> AdaptiveMaxPool((7, 7))(jnp.ones((8, 13, 13, 64))).shape
    (8, 7, 7, 64)
  """


class GlobalAvgPool(_MaskedCall, _Pool, _layers.GlobalAvgPool):
  """Global average pooling, :func:`jaxpool.global_avg_pool`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import GlobalAvgPool
    >>> GlobalAvgPool()(jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class GlobalMaxPool(_MaskedCall, _Pool, _layers.GlobalMaxPool):
  """Global max pooling, :func:`jaxpool.global_max_pool`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import GlobalMaxPool
    >>> GlobalMaxPool()(jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class SpatialPyramidPool(_Pool, _layers.SpatialPyramidPool):
  """Spatial pyramid pooling, :func:`jaxpool.spatial_pyramid_pool`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import SpatialPyramidPool
    >>> SpatialPyramidPool()(jnp.ones((8, 16, 16, 64))).shape
    (8, 1344)

  References:
    He et al. 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks
    for Visual Recognition".
  """


class SppYolo(_Pool, _layers.SppYolo):
  """YOLO's spatial pyramid pooling, :func:`jaxpool.spp_yolo`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import SppYolo
    >>> SppYolo((5, 9, 13))(jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    He et al. 2014 (SPPNet), in YOLOv3-SPP's stride-1 form.
  """


class SPPF(_Pool, _layers.SPPF):
  """YOLOv5's fast SPP, :func:`jaxpool.sppf`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import SPPF
    >>> SPPF(5, 3)(jnp.ones((8, 20, 20, 64))).shape
    (8, 20, 20, 256)

  References:
    Jocher et al., YOLOv5 (2020), ``models/common.py: SPPF``.
  """


class MaxPoolWithIndices(_Pool, _layers.MaxPoolWithIndices):
  """:func:`jaxpool.max_pool_with_indices` as an Equinox module.

  Calling it returns ``(values, indices)``, as PyTorch's
  ``MaxPool2d(..., return_indices=True)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import MaxPoolWithIndices
    >>> y, i = MaxPoolWithIndices((2, 2))(jnp.ones((8, 32, 32, 3)))
    >>> y.shape, i.dtype
    ((8, 16, 16, 3), dtype('int32'))
  """


class MaxUnpool(eqx.Module, _layers.MaxUnpool):
  """Max unpooling, :func:`jaxpool.max_unpool`, as an Equinox module.

  ``spatial_shape`` is a field, or given at each call (PyTorch's
  ``output_size``) for maps whose size varies.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import MaxPoolWithIndices, MaxUnpool
    >>> x = jnp.ones((8, 32, 32, 3))
    >>> y, i = MaxPoolWithIndices((2, 2))(x)
    >>> MaxUnpool()(y, i, x.shape[1:3]).shape
    (8, 32, 32, 3)
  """

  spatial_shape: tuple[int, ...] | None = eqx.field(static=True, default=None)
  window_shape: tuple[int, ...] | None = eqx.field(
      static=True, default=None, kw_only=True)
  strides: IntOrSequence | None = eqx.field(
      static=True, default=None, kw_only=True)
  padding: IntOrSequence = eqx.field(static=True, default=0, kw_only=True)
  output_size: tuple[int, ...] | None = eqx.field(
      static=True, default=None, kw_only=True)
  channels_first: bool = eqx.field(static=True, default=False, kw_only=True)

  def __call__(self, x: ArrayLike, indices: ArrayLike,
               spatial_shape: Sequence[int] | None = None, *,
               key: jax.Array | None = None) -> jax.Array:
    """Unpools ``x`` at ``indices``; ``key`` is accepted and unused."""
    del key
    return self._unpool(x, indices, spatial_shape)


class AdaptiveMaxPoolWithIndices(_Pool, _layers.AdaptiveMaxPoolWithIndices):
  """:func:`jaxpool.adaptive_max_pool_with_indices` as an Equinox module.

  It returns ``(values, indices)``, the indices ready for
  :func:`jaxpool.max_unpool`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import AdaptiveMaxPoolWithIndices
    >>> y, i = AdaptiveMaxPoolWithIndices((7, 7))(jnp.ones((8, 13, 13, 64)))
    >>> i.shape
    (8, 7, 7, 64)
  """


class Flatten(_Pool, _layers.Flatten):
  """:func:`jaxpool.flatten` as an Equinox module: PyTorch's
  ``nn.Flatten()`` order (``"chw"``) from channels-last maps.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import Flatten
    >>> Flatten()(jnp.ones((8, 7, 7, 512))).shape
    (8, 25088)
  """


class BlurPool(_Pool, _layers.BlurPool):
  """Blur pooling, :func:`jaxpool.blur_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import BlurPool
    >>> BlurPool(4, 2)(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Zhang 2019, "Making Convolutional Networks Shift-Invariant Again".
  """


class MaxBlurPool(_Pool, _layers.MaxBlurPool):
  """Max-blur pooling, :func:`jaxpool.max_blur_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import MaxBlurPool
    >>> MaxBlurPool(4, 2)(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Zhang 2019, "Making Convolutional Networks Shift-Invariant Again".
  """


class ApsPool(_Pool, _layers.ApsPool):
  """Adaptive polyphase sampling, :func:`jaxpool.aps_pool`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import ApsPool
    >>> ApsPool(2, window_shape=2)(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Chaman & Dokmanić 2021, "Truly Shift-Invariant Convolutional Neural
    Networks".
  """


class FractionalMaxPool(_Pool, _layers.FractionalMaxPool):
  """Fractional max pooling, :func:`jaxpool.fractional_max_pool`, in Equinox.

  Each call takes a ``key`` (as ``eqx.nn.Dropout``), or explicit
  ``samples``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import FractionalMaxPool
    >>> pool = FractionalMaxPool(2, output_ratio=0.7)
    >>> pool(jnp.ones((8, 32, 32, 3)), key=jax.random.key(0)).shape
    (8, 22, 22, 3)

  References:
    Graham 2014, "Fractional Max-Pooling".
  """

  def __call__(  # type: ignore[override]  # samples may come positionally
      self, x: ArrayLike, samples: ArrayLike | None = None, *,
      key: jax.Array | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Pools ``x`` with samples drawn from ``key``, or the ``samples``."""
    if samples is not None:
      return self._pool(x, samples=samples)
    return self._pool(x, key=key)


class StochasticPool(_Pool, _layers.StochasticPool):
  """Stochastic pooling, :func:`jaxpool.stochastic_pool`, in Equinox.

  Training calls take a ``key``. ``deterministic`` (evaluation, no key) is
  a static field; a call may override it with ``inference`` (the name
  ``eqx.nn.Dropout`` uses) or ``deterministic``. ``eqx.nn.inference_mode``
  does not reach a static field: set ``deterministic`` with
  ``eqx.tree_at`` or pass ``inference`` instead.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import StochasticPool
    >>> pool = StochasticPool((2, 2))
    >>> x = jnp.ones((8, 32, 32, 3))
    >>> pool(x, key=jax.random.key(0)).shape
    (8, 16, 16, 3)
    >>> pool(x, inference=True).shape
    (8, 16, 16, 3)

  References:
    Zeiler & Fergus 2013, "Stochastic Pooling for Regularization of Deep
    Convolutional Neural Networks".
  """

  def __call__(self, x: ArrayLike, *, key: jax.Array | None = None,
               inference: bool | None = None,
               deterministic: bool | None = None) -> jax.Array:
    """Pools ``x``: a draw with ``key``, or the expectation in inference."""
    if inference is not None and deterministic is not None and (
        inference != deterministic):
      raise ValueError(
          f"inference={inference!r} and deterministic={deterministic!r} "
          "disagree; give one.")
    flag = inference if inference is not None else deterministic
    if flag is None:
      flag = self.deterministic
    return self._pool(x, key=None if flag else key, deterministic=flag)


class SoftPool(_Pool, _layers.SoftPool):
  """SoftPool, :func:`jaxpool.soft_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import SoftPool
    >>> SoftPool(window_shape=(2, 2))(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Stergiou, Poppe & Kalliatakis 2021, "Refining activation downsampling
    with SoftPool".
  """


class LsePool(_Pool, _layers.LsePool):
  """Log-sum-exp pooling, :func:`jaxpool.lse_pool`, as an Equinox module.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import LsePool
    >>> LsePool(2.0)(jnp.ones((8, 7, 7, 64))).shape
    (8, 64)
  """


class AdaptiveAvgMaxPool(_Pool, _layers.AdaptiveAvgMaxPool):
  """timm's ``avgmax`` head, :func:`jaxpool.adaptive_avgmax_pool`, in Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import AdaptiveAvgMaxPool
    >>> AdaptiveAvgMaxPool()(jnp.ones((8, 7, 7, 64))).shape
    (8, 1, 1, 64)
  """


class AdaptiveCatAvgMaxPool(_Pool, _layers.AdaptiveCatAvgMaxPool):
  """timm's ``catavgmax`` head, :func:`jaxpool.adaptive_catavgmax_pool`, in
  Equinox.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import AdaptiveCatAvgMaxPool
    >>> AdaptiveCatAvgMaxPool()(jnp.ones((8, 7, 7, 64))).shape
    (8, 1, 1, 128)
  """


class GemPool(_LearnedPool, _layers.GemPool):
  """GeM pooling, :func:`jaxpool.gem_pool`, with ``p`` a learned array.

  ``p`` starts at ``p_init`` (3.0, as cirtorch's ``GeM``): one value, or
  one per channel with ``channels``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import GemPool
    >>> model = GemPool()
    >>> model.p
    Array(3., dtype=float32)
    >>> model(jnp.ones((8, 7, 7, 64))).shape
    (8, 64)

  References:
    Radenović, Tolias & Chum 2018, "Fine-tuning CNN Image Retrieval with No
    Human Annotation".
  """

  p: jax.Array | None = eqx.field(default=None, kw_only=True)


class MixedPool(_LearnedPool, _layers.MixedPool):
  """Mixed max-average pooling, :func:`jaxpool.mixed_pool`, ``a`` learned.

  ``a`` starts at ``a_init`` (0.5): one value, or one per channel with
  ``channels``; it is not clipped to ``[0, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import MixedPool
    >>> model = MixedPool(channels=3, window_shape=(2, 2))
    >>> model(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Lee, Gallagher & Tu 2016, "Generalizing Pooling Functions in
    Convolutional Neural Networks: Mixed, Gated, and Tree".
  """

  a: jax.Array | None = eqx.field(default=None, kw_only=True)


class GatedPool(_LearnedPool, _layers.GatedPool):
  """Gated max-average pooling, :func:`jaxpool.gated_pool`, mask learned.

  The gating mask starts at zeros (a gate of 1/2): one mask of the window's
  shape, or one per channel with ``channels``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import GatedPool
    >>> GatedPool((2, 2))(jnp.ones((8, 32, 32, 3))).shape
    (8, 16, 16, 3)

  References:
    Lee, Gallagher & Tu 2016, "Generalizing Pooling Functions in
    Convolutional Neural Networks: Mixed, Gated, and Tree".
  """

  gate: jax.Array | None = eqx.field(default=None, kw_only=True)


class _RoIPool(_Pool):
  """An Equinox module that pools boxes of a map: called on ``(x, boxes)``."""

  _base = True

  def __call__(self, x: ArrayLike, boxes: Any = None, *,
               key: jax.Array | None = None) -> jax.Array:
    """Pools ``boxes`` of ``x``; ``key`` is accepted and unused."""
    del key
    return self._pool(x, boxes=boxes)  # type: ignore[attr-defined]


class _MultiScale(_Pool):
  """An Equinox module that pools boxes of a pyramid of maps."""

  _base = True

  def __call__(self, features: Any, boxes: Any = None,
               image_shapes: Any = None, *,
               key: jax.Array | None = None) -> jax.Array:
    """Pools ``boxes`` of ``features``; ``key`` is accepted and unused."""
    del key
    return self._pool(  # type: ignore[attr-defined]
        features, boxes=boxes, image_shapes=image_shapes)


class RoIPool(_RoIPool, _layers.RoIPool):
  """RoI max pooling, :func:`jaxpool.roi_pool`, as an Equinox module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import RoIPool
    >>> x = jnp.ones((2, 32, 32, 8))
    >>> boxes = jnp.array([[0., 0., 0., 20., 12.], [1., 4., 4., 30., 30.]])
    >>> RoIPool(7, 0.5)(x, boxes).shape
    (2, 7, 7, 8)
  """


class RoIAlign(_RoIPool, _layers.RoIAlign):
  """RoI Align, :func:`jaxpool.roi_align`, as an Equinox module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import RoIAlign
    >>> x = jnp.ones((2, 32, 32, 8))
    >>> boxes = jnp.array([[0., 0., 0., 20., 12.], [1., 4., 4., 30., 30.]])
    >>> RoIAlign(7, 0.5, 2)(x, boxes).shape
    (2, 7, 7, 8)
  """


class PSRoIPool(_RoIPool, _layers.PSRoIPool):
  """Position-sensitive RoI pooling, :func:`jaxpool.ps_roi_pool`, as an Equinox module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import PSRoIPool
    >>> x = jnp.ones((1, 16, 16, 2 * 3 * 3))
    >>> boxes = jnp.array([[0., 0., 0., 12., 12.]])
    >>> PSRoIPool(3)(x, boxes).shape
    (1, 3, 3, 2)
  """


class PSRoIAlign(_RoIPool, _layers.PSRoIAlign):
  """Position-sensitive RoI Align, :func:`jaxpool.ps_roi_align`, as an Equinox module; called on
  ``(x, boxes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import PSRoIAlign
    >>> x = jnp.ones((1, 16, 16, 2 * 3 * 3))
    >>> boxes = jnp.array([[0., 0., 0., 12., 12.]])
    >>> PSRoIAlign(3, sampling_ratio=2)(x, boxes).shape
    (1, 3, 3, 2)
  """


class MultiScaleRoIAlign(_MultiScale, _layers.MultiScaleRoIAlign):
  """Multi-scale RoI Align, :func:`jaxpool.multi_scale_roi_align`, as an
  Equinox module (torchvision's ``MultiScaleRoIAlign``); called on
  ``(features, boxes, image_shapes)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool.equinox import MultiScaleRoIAlign
    >>> features = [jnp.ones((1, 64, 64, 8)), jnp.ones((1, 32, 32, 8))]
    >>> boxes = [jnp.array([[0., 0., 40., 40.], [0., 0., 250., 250.]])]
    >>> MultiScaleRoIAlign(7, 2)(features, boxes, [(256, 256)]).shape
    (2, 7, 7, 8)
  """
