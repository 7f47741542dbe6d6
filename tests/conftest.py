"""Strict numerics for the whole suite, as equinox's tests set them.

Strict dtype promotion and rank promotion "raise" make silent broadcasting
or dtype widening inside jaxpool fail the tests instead of passing them.
"""

import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
