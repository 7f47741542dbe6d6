"""Settings for every pytest run from the repository root, doctests included.

``python3 -m pytest --doctest-modules jaxpool`` collects nothing under
``tests/``, so ``tests/conftest.py`` does not apply to it: the docstring
examples get the suite's strict dtype promotion and rank promotion "raise"
here, so that an example cannot pass only by silent widening or
broadcasting. (``tests/conftest.py`` also makes four host devices, which
must happen before JAX starts a backend; importing JAX here does not start
one.)
"""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
