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

A module here takes the fields and calls of :mod:`jaxpool.nnx`'s module of
the same name, so unless it says otherwise it takes that module's docstring
(its example importing from here), written once, there.

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

from jaxpool import _layers, nnx
from jaxpool._typing import IntOrSequence


def _from_nnx(name: str) -> str:
  """The docstring of ``jaxpool.nnx``'s module ``name``, for Equinox."""
  doc = getattr(nnx, name).__doc__
  if doc is None:
    raise TypeError(f"jaxpool.nnx.{name} has no docstring to share")
  return doc.replace("jaxpool.nnx", "jaxpool.equinox").replace(
      "NNX", "Equinox")


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
    if cls.__dict__.get("__doc__") is None:
      cls.__doc__ = _from_nnx(cls.__name__)
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
  pass


class MinPool(_Pool, _layers.MinPool):
  pass


class AvgPool(_MaskedCall, _Pool, _layers.AvgPool):
  pass


class LPPool(_Pool, _layers.LPPool):
  pass


class AdaptiveAvgPool(_MaskedCall, _Pool, _layers.AdaptiveAvgPool):
  pass


class AdaptiveMaxPool(_MaskedCall, _Pool, _layers.AdaptiveMaxPool):
  pass


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
  pass


class SppYolo(_Pool, _layers.SppYolo):
  pass


class SPPF(_Pool, _layers.SPPF):
  pass


class MaxPoolWithIndices(_Pool, _layers.MaxPoolWithIndices):
  pass


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
  pass


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
  pass


class MaxBlurPool(_Pool, _layers.MaxBlurPool):
  pass


class ApsPool(_Pool, _layers.ApsPool):
  pass


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
  pass


class LsePool(_Pool, _layers.LsePool):
  pass


class AdaptiveAvgMaxPool(_Pool, _layers.AdaptiveAvgMaxPool):
  pass


class AdaptiveCatAvgMaxPool(_Pool, _layers.AdaptiveCatAvgMaxPool):
  pass


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
  a: jax.Array | None = eqx.field(default=None, kw_only=True)


class GatedPool(_LearnedPool, _layers.GatedPool):
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
  pass


class RoIAlign(_RoIPool, _layers.RoIAlign):
  pass


class PSRoIPool(_RoIPool, _layers.PSRoIPool):
  pass


class PSRoIAlign(_RoIPool, _layers.PSRoIAlign):
  pass


class MultiScaleRoIAlign(_MultiScale, _layers.MultiScaleRoIAlign):
  pass
