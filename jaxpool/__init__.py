"""jaxpool: pooling for JAX and Flax, PyTorch-exact and fast."""

from jaxpool._lowering import force_plain_lowering
from jaxpool._pooling import avg_pool
from jaxpool._pooling import lp_pool
from jaxpool._pooling import max_pool
from jaxpool._pooling import min_pool
from jaxpool._pooling import pool
from jaxpool._pooling import pool_output_shape

__version__ = "0.1.0"

__all__ = (
    "avg_pool",
    "force_plain_lowering",
    "lp_pool",
    "max_pool",
    "min_pool",
    "pool",
    "pool_output_shape",
)
