"""Test-wide settings, made before JAX starts its backends.

Strict dtype promotion and rank promotion "raise" (as equinox's tests set
them) make silent broadcasting or dtype widening inside jaxpool fail the
tests instead of passing them. Four host CPU devices let the sharding tests
build a 2x2 mesh in the same process; other tests use the first device. A
compilation cache shared by the session's processes saves recompiling the
programs that several tests build.
"""

import os
import tempfile

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                             _FLAG).strip()

# One compilation cache for the session's processes (pytest-xdist's workers
# inherit it): many tests compile the same programs. A new directory each
# session, so nothing outlives the run.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="jaxpool-tests-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
