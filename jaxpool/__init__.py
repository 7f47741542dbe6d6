"""jaxpool: pooling for JAX and Flax, PyTorch-exact and fast."""

from jaxpool import graph
from jaxpool import invariance
from jaxpool._adaptive import adaptive_avg_pool
from jaxpool._adaptive import adaptive_max_pool
from jaxpool._adaptive import adaptive_max_pool_with_indices
from jaxpool._adaptive import global_avg_pool
from jaxpool._adaptive import global_max_pool
from jaxpool._avgmax import adaptive_avgmax_pool
from jaxpool._avgmax import adaptive_catavgmax_pool
from jaxpool._avgmax import gated_pool
from jaxpool._avgmax import mixed_pool
from jaxpool._blur import blur_pool
from jaxpool._blur import max_blur_pool
from jaxpool._flatten import flatten
from jaxpool._fractional import fractional_max_pool
from jaxpool._indices import max_pool_with_indices
from jaxpool._indices import max_unpool
from jaxpool._lowering import force_plain_lowering
from jaxpool._means import gem_pool
from jaxpool._means import lse_pool
from jaxpool._means import soft_pool
from jaxpool._polyphase import aps_pool
from jaxpool._pooling import avg_pool
from jaxpool._pooling import lp_pool
from jaxpool._pooling import max_pool
from jaxpool._pooling import min_pool
from jaxpool._pooling import pool
from jaxpool._pooling import pool_output_shape
from jaxpool._pyramid import spatial_pyramid_pool
from jaxpool._pyramid import spp_yolo
from jaxpool._pyramid import sppf
from jaxpool._roi import multi_scale_roi_align
from jaxpool._roi import ps_roi_align
from jaxpool._roi import ps_roi_pool
from jaxpool._roi import roi_align
from jaxpool._roi import roi_pool
from jaxpool._segment import segment_pool
from jaxpool._stochastic import stochastic_pool

__version__ = "0.1.0"


def __getattr__(name: str):
  # Imported on first use, so that `python -m jaxpool.tune` runs it fresh.
  if name == "tune":
    import jaxpool.tune  # pylint: disable=g-import-not-at-top,redefined-outer-name
    return jaxpool.tune
  raise AttributeError(f"module 'jaxpool' has no attribute {name!r}")

__all__ = (
    "adaptive_avg_pool",
    "adaptive_avgmax_pool",
    "adaptive_catavgmax_pool",
    "adaptive_max_pool",
    "adaptive_max_pool_with_indices",
    "aps_pool",
    "avg_pool",
    "blur_pool",
    "flatten",
    "force_plain_lowering",
    "fractional_max_pool",
    "gated_pool",
    "gem_pool",
    "global_avg_pool",
    "global_max_pool",
    "graph",
    "invariance",
    "lp_pool",
    "lse_pool",
    "max_blur_pool",
    "max_pool",
    "max_pool_with_indices",
    "max_unpool",
    "min_pool",
    "mixed_pool",
    "multi_scale_roi_align",
    "pool",
    "pool_output_shape",
    "ps_roi_align",
    "ps_roi_pool",
    "roi_align",
    "roi_pool",
    "segment_pool",
    "soft_pool",
    "spatial_pyramid_pool",
    "spp_yolo",
    "sppf",
    "stochastic_pool",
    "tune",
)
