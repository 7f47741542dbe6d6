"""Test-wide settings, made before JAX starts its backends.

Strict dtype promotion and rank promotion "raise" (as equinox's tests set
them) make silent broadcasting or dtype widening inside jaxpool fail the
tests instead of passing them. Four host CPU devices let the sharding tests
build a 2x2 mesh in the same process; other tests use the first device.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                             _FLAG).strip()

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
