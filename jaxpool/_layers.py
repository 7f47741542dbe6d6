"""Each pooling layer's fields, shared by the Linen, NNX and Equinox modules.

Each class lists one pooling function's arguments other than ``x`` as
dataclass fields, with the function's names, defaults and keyword-only marks,
and names the function. :mod:`jaxpool.linen` and :mod:`jaxpool.nnx` add a
Flax base, and :mod:`jaxpool.equinox` an Equinox one (which redeclares the
fields as static), whose ``__call__`` is one call of that function, so a layer
and its function are one code path and each field list is written once, here.
A new layer is its field list here plus one short class in each of the three.
``tests/test_linen.py`` checks every list against its function's signature.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

import jaxpool
from jaxpool._pyramid import LevelLike
from jaxpool._typing import IntOrSequence, OutputSizeLike, PaddingLike, Shape


def _frozen(value: Any) -> Any:
  """``value`` with every list made a tuple, so that a field hashes."""
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


@functools.cache
def keyword_names(function: Callable[..., Any]) -> tuple[str, ...]:
  """The names of ``function``'s arguments after its first, ``x``."""
  return tuple(inspect.signature(function).parameters)[1:]


@dataclasses.dataclass(eq=False, repr=False)
class Layer:
  """A pooling function's arguments as fields; Flax adds ``__call__``.

  ``eq`` and ``repr`` are left to Flax, which gives both APIs their own.
  """

  function: ClassVar[Callable[..., Any]]
  #: Keywords of the function given at each call, never fields, because
  #: they change from call to call: a mask, a PRNG key (which each framework
  #: draws its own way), and what a subclass adds (boxes, samples).
  call_arguments: ClassVar[tuple[str, ...]] = ("mask", "key")

  @classmethod
  def config_names(cls) -> tuple[str, ...]:
    """The function's keywords that are fields of this layer: all but the
    ones a call supplies (:attr:`call_arguments`)."""
    return tuple(name for name in keyword_names(cls.function)
                 if name not in cls.call_arguments)

  def __post_init__(self) -> None:
    # Linen hashes its modules and NNX keeps lists as graph nodes, so window
    # arguments are stored as tuples; object.__setattr__ because Linen's own
    # __setattr__ needs the state its __post_init__ has not yet made.
    for name in self.config_names():
      object.__setattr__(self, name, _frozen(getattr(self, name)))
    post_init = getattr(super(), "__post_init__", None)
    if post_init is not None:
      post_init()

  def _pool(self, x: jax.typing.ArrayLike, **call: Any) -> jax.Array:
    """One call of :attr:`function` with these fields as its arguments;
    ``call`` adds the call's own (:attr:`call_arguments`) and overrides
    fields."""
    return self.function(
        x, **{**{name: getattr(self, name) for name in self.config_names()},
              **call})


@dataclasses.dataclass(eq=False, repr=False)
class MaxPool(Layer):
  """The arguments of :func:`jaxpool.max_pool`."""

  function = staticmethod(jaxpool.max_pool)
  window_shape: Shape
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  _: dataclasses.KW_ONLY
  dilation: IntOrSequence = 1
  ceil_mode: bool = False
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class MinPool(MaxPool):
  """The arguments of :func:`jaxpool.min_pool` (those of ``max_pool``)."""

  function = staticmethod(jaxpool.min_pool)


@dataclasses.dataclass(eq=False, repr=False)
class AvgPool(Layer):
  """The arguments of :func:`jaxpool.avg_pool`."""

  function = staticmethod(jaxpool.avg_pool)
  window_shape: Shape
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  _: dataclasses.KW_ONLY
  dilation: IntOrSequence = 1
  ceil_mode: bool = False
  count_include_pad: bool = True
  divisor_override: int | None = None
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class LPPool(Layer):
  """The arguments of :func:`jaxpool.lp_pool`."""

  function = staticmethod(jaxpool.lp_pool)
  p: float
  window_shape: Shape
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  _: dataclasses.KW_ONLY
  ceil_mode: bool = False
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class AdaptiveAvgPool(Layer):
  """The arguments of :func:`jaxpool.adaptive_avg_pool`."""

  function = staticmethod(jaxpool.adaptive_avg_pool)
  output_size: OutputSizeLike
  _: dataclasses.KW_ONLY
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class AdaptiveMaxPool(AdaptiveAvgPool):
  """The arguments of :func:`jaxpool.adaptive_max_pool`."""

  function = staticmethod(jaxpool.adaptive_max_pool)


@dataclasses.dataclass(eq=False, repr=False)
class GlobalAvgPool(Layer):
  """The arguments of :func:`jaxpool.global_avg_pool`."""

  function = staticmethod(jaxpool.global_avg_pool)
  _: dataclasses.KW_ONLY
  keepdims: bool = False
  spatial_dims: int | None = None
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class GlobalMaxPool(GlobalAvgPool):
  """The arguments of :func:`jaxpool.global_max_pool`."""

  function = staticmethod(jaxpool.global_max_pool)
  _: dataclasses.KW_ONLY
  tie_rule: str = "first"


@dataclasses.dataclass(eq=False, repr=False)
class SpatialPyramidPool(Layer):
  """The arguments of :func:`jaxpool.spatial_pyramid_pool`."""

  function = staticmethod(jaxpool.spatial_pyramid_pool)
  levels: Sequence[LevelLike] = (1, 2, 4)
  _: dataclasses.KW_ONLY
  method: str = "max"
  bins: str = "adaptive"
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class SppYolo(Layer):
  """The arguments of :func:`jaxpool.spp_yolo`."""

  function = staticmethod(jaxpool.spp_yolo)
  window_sizes: Sequence[LevelLike] = (5, 9, 13)
  _: dataclasses.KW_ONLY
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class SPPF(Layer):
  """The arguments of :func:`jaxpool.sppf`."""

  function = staticmethod(jaxpool.sppf)
  window_size: LevelLike = 5
  repeats: int = 3
  _: dataclasses.KW_ONLY
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class MaxPoolWithIndices(MaxPool):
  """The arguments of :func:`jaxpool.max_pool_with_indices` (``max_pool``'s)."""

  function = staticmethod(jaxpool.max_pool_with_indices)


@dataclasses.dataclass(eq=False, repr=False)
class MaxUnpool(Layer):
  """The arguments of :func:`jaxpool.max_unpool` after ``x`` and ``indices``.

  ``spatial_shape`` may be left ``None`` here and given at each call, for
  maps whose size varies; one given at the call wins. Or, as PyTorch's
  ``MaxUnpool2d``, give ``window_shape`` (its ``kernel_size``),
  ``strides`` and ``padding``, and ``output_size`` if needed.
  """

  function = staticmethod(jaxpool.max_unpool)
  spatial_shape: Shape | None = None
  _: dataclasses.KW_ONLY
  window_shape: Shape | None = None
  strides: IntOrSequence | None = None
  padding: IntOrSequence = 0
  output_size: Shape | None = None
  channels_first: bool = False

  def __post_init__(self) -> None:
    # Not Layer's: that one makes a field of every keyword of the function,
    # and ``indices`` is the second array, not a field.
    for name in ("spatial_shape", "window_shape", "strides", "padding",
                 "output_size"):
      object.__setattr__(self, name, _frozen(getattr(self, name)))
    post_init = getattr(super(Layer, self), "__post_init__", None)
    if post_init is not None:
      post_init()

  def _unpool(self, x: jax.typing.ArrayLike, indices: jax.typing.ArrayLike,
              spatial_shape: Shape | None = None) -> jax.Array:
    """One call of :func:`jaxpool.max_unpool` with these fields."""
    if spatial_shape is None:
      spatial_shape = self.spatial_shape
    return self.function(
        x, indices, spatial_shape, window_shape=self.window_shape,
        strides=self.strides, padding=self.padding,
        output_size=self.output_size, channels_first=self.channels_first)


@dataclasses.dataclass(eq=False, repr=False)
class Flatten(Layer):
  """The arguments of :func:`jaxpool.flatten`."""

  function = staticmethod(jaxpool.flatten)
  order: str = "chw"
  _: dataclasses.KW_ONLY
  spatial_dims: int | None = None
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class BlurPool(Layer):
  """The arguments of :func:`jaxpool.blur_pool`."""

  function = staticmethod(jaxpool.blur_pool)
  filter_size: IntOrSequence = 4
  strides: IntOrSequence = 2
  _: dataclasses.KW_ONLY
  padding: str = "reflect"
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class MaxBlurPool(Layer):
  """The arguments of :func:`jaxpool.max_blur_pool`."""

  function = staticmethod(jaxpool.max_blur_pool)
  filter_size: IntOrSequence = 4
  strides: IntOrSequence = 2
  _: dataclasses.KW_ONLY
  window_shape: IntOrSequence = 2
  padding: str = "reflect"
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class ApsPool(Layer):
  """The arguments of :func:`jaxpool.aps_pool`."""

  function = staticmethod(jaxpool.aps_pool)
  strides: IntOrSequence = 2
  _: dataclasses.KW_ONLY
  window_shape: IntOrSequence = 1
  norm_ord: float = 2
  filter_size: IntOrSequence = 1
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class AdaptiveMaxPoolWithIndices(AdaptiveAvgPool):
  """The arguments of :func:`jaxpool.adaptive_max_pool_with_indices`."""

  function = staticmethod(jaxpool.adaptive_max_pool_with_indices)


@dataclasses.dataclass(eq=False, repr=False)
class FractionalMaxPool(Layer):
  """The arguments of :func:`jaxpool.fractional_max_pool`; ``key`` (or
  ``samples``) comes with each call."""

  function = staticmethod(jaxpool.fractional_max_pool)
  call_arguments = (*Layer.call_arguments, "samples")
  window_shape: IntOrSequence
  output_size: IntOrSequence | None = None
  _: dataclasses.KW_ONLY
  output_ratio: float | Sequence[float] | None = None
  return_indices: bool = False
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class StochasticPool(Layer):
  """The arguments of :func:`jaxpool.stochastic_pool`; ``key`` comes with
  each call, and ``deterministic`` may be overridden there."""

  function = staticmethod(jaxpool.stochastic_pool)
  window_shape: IntOrSequence
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  _: dataclasses.KW_ONLY
  deterministic: bool = False
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class SoftPool(Layer):
  """The arguments of :func:`jaxpool.soft_pool`."""

  function = staticmethod(jaxpool.soft_pool)
  _: dataclasses.KW_ONLY
  window_shape: Shape | None = None
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  keepdims: bool = False
  spatial_dims: int | None = None
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class LsePool(Layer):
  """The arguments of :func:`jaxpool.lse_pool`."""

  function = staticmethod(jaxpool.lse_pool)
  r: float = 1.0
  _: dataclasses.KW_ONLY
  window_shape: Shape | None = None
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  keepdims: bool = False
  spatial_dims: int | None = None
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class AdaptiveAvgMaxPool(Layer):
  """The arguments of :func:`jaxpool.adaptive_avgmax_pool`."""

  function = staticmethod(jaxpool.adaptive_avgmax_pool)
  output_size: OutputSizeLike = 1
  _: dataclasses.KW_ONLY
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class AdaptiveCatAvgMaxPool(AdaptiveAvgMaxPool):
  """The arguments of :func:`jaxpool.adaptive_catavgmax_pool`."""

  function = staticmethod(jaxpool.adaptive_catavgmax_pool)


# ---------------------------------------------------------------------------
# Layers with a learned parameter: the module owns the parameter, created
# from the fields below, and passes it to the function at each call.


@dataclasses.dataclass(eq=False, repr=False)
class Learned(Layer):
  """A pooling whose argument :attr:`learned` is a learned parameter.

  The function's other keywords are fields, as in
  :class:`Layer`; a subclass adds the fields that shape and initialise the
  parameter, and :meth:`initial` makes it.
  """

  learned: ClassVar[str]

  @classmethod
  def config_names(cls) -> tuple[str, ...]:
    return tuple(name for name in super().config_names()
                 if name != cls.learned)

  def initial(self) -> jax.Array:
    """The parameter's initial value, float32."""
    raise NotImplementedError

  def _pool_with(self, x: jax.typing.ArrayLike,
                 value: jax.typing.ArrayLike) -> jax.Array:
    """One call of :attr:`function` with ``value`` as the parameter."""
    return self.function(
        x, **{self.learned: value},
        **{name: getattr(self, name) for name in self.config_names()})


@dataclasses.dataclass(eq=False, repr=False)
class GemPool(Learned):
  """:func:`jaxpool.gem_pool` with ``p`` learned: one, or one per channel."""

  function = staticmethod(jaxpool.gem_pool)
  learned = "p"
  p_init: float = 3.0
  channels: int | None = None
  eps: float = 1e-6
  _: dataclasses.KW_ONLY
  window_shape: Shape | None = None
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  keepdims: bool = False
  spatial_dims: int | None = None
  channels_first: bool = False

  def initial(self) -> jax.Array:
    shape = () if self.channels is None else (self.channels,)
    return jnp.full(shape, self.p_init, jnp.float32)


@dataclasses.dataclass(eq=False, repr=False)
class MixedPool(Learned):
  """:func:`jaxpool.mixed_pool` with ``a`` learned: one, or one per
  channel."""

  function = staticmethod(jaxpool.mixed_pool)
  learned = "a"
  a_init: float = 0.5
  channels: int | None = None
  _: dataclasses.KW_ONLY
  window_shape: Shape | None = None
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  keepdims: bool = False
  spatial_dims: int | None = None
  channels_first: bool = False

  def initial(self) -> jax.Array:
    shape = () if self.channels is None else (self.channels,)
    return jnp.full(shape, self.a_init, jnp.float32)


@dataclasses.dataclass(eq=False, repr=False)
class GatedPool(Learned):
  """:func:`jaxpool.gated_pool` with the gating mask learned (zeros at
  first): one mask, or one per channel."""

  function = staticmethod(jaxpool.gated_pool)
  learned = "gate"
  window_shape: Shape
  strides: IntOrSequence | None = None
  padding: PaddingLike = "VALID"
  _: dataclasses.KW_ONLY
  channels: int | None = None
  keepdims: bool = False
  spatial_dims: int | None = None
  channels_first: bool = False

  def initial(self) -> jax.Array:
    if not isinstance(self.window_shape, Sequence):
      raise ValueError(
          "GatedPool needs window_shape as one size per spatial dim (it "
          f"shapes the gating mask), got {self.window_shape!r}.")
    window = tuple(self.window_shape)
    if self.channels is not None:
      window = ((self.channels, *window) if self.channels_first else
                (*window, self.channels))
    return jnp.zeros(window, jnp.float32)


@dataclasses.dataclass(eq=False, repr=False)
class RoIPool(Layer):
  """The arguments of :func:`jaxpool.roi_pool` after ``x`` and ``boxes``."""

  function = staticmethod(jaxpool.roi_pool)
  call_arguments = (*Layer.call_arguments, "boxes")
  output_size: IntOrSequence
  spatial_scale: float = 1.0
  _: dataclasses.KW_ONLY
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class RoIAlign(Layer):
  """The arguments of :func:`jaxpool.roi_align` after ``x`` and ``boxes``."""

  function = staticmethod(jaxpool.roi_align)
  call_arguments = (*Layer.call_arguments, "boxes")
  output_size: IntOrSequence
  spatial_scale: float = 1.0
  sampling_ratio: int = -1
  aligned: bool = False
  _: dataclasses.KW_ONLY
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class PSRoIPool(RoIPool):
  """The arguments of :func:`jaxpool.ps_roi_pool` (``roi_pool``'s)."""

  function = staticmethod(jaxpool.ps_roi_pool)


@dataclasses.dataclass(eq=False, repr=False)
class PSRoIAlign(Layer):
  """The arguments of :func:`jaxpool.ps_roi_align` after ``x`` and
  ``boxes``."""

  function = staticmethod(jaxpool.ps_roi_align)
  call_arguments = (*Layer.call_arguments, "boxes")
  output_size: IntOrSequence
  spatial_scale: float = 1.0
  sampling_ratio: int = -1
  _: dataclasses.KW_ONLY
  channels_first: bool = False


@dataclasses.dataclass(eq=False, repr=False)
class MultiScaleRoIAlign(Layer):
  """The arguments of :func:`jaxpool.multi_scale_roi_align` after
  ``features``, ``boxes`` and ``image_shapes`` (given at each call)."""

  function = staticmethod(jaxpool.multi_scale_roi_align)
  call_arguments = (*Layer.call_arguments, "boxes", "image_shapes")
  output_size: IntOrSequence
  sampling_ratio: int = -1
  _: dataclasses.KW_ONLY
  canonical_scale: float = 224
  canonical_level: int = 4
  eps: float = 1e-6
  channels_first: bool = False
