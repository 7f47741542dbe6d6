"""Settings for every pytest run from the repository root, doctests included.

``python3 -m pytest --doctest-modules jaxpool`` collects nothing under
``tests/``, so ``tests/conftest.py`` does not apply to it: the docstring
examples get the suite's strict dtype promotion and rank promotion "raise"
here, so that an example cannot pass only by silent widening or
broadcasting. (``tests/conftest.py`` also makes four host devices, which
must happen before JAX starts a backend; importing JAX here does not start
one.)

XLA:CPU compiles with LLVM's optimisation level 0 here: the tests and
examples compile some two thousand small programs and run each on tiny
inputs, so compiling dominates (the suite takes a quarter less time on two
cores); the HLO that tests inspect is XLA's own optimised HLO at any level,
and the suite passes at both. Benchmarks (``bench/``) run at the default
level. A level set in ``XLA_FLAGS`` wins.
"""

import os

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
