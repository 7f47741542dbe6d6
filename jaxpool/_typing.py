"""Argument types shared by the public functions, as in ``flax.typing``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import jax

#: A spatial shape: one int per spatial dimension.
Shape = Sequence[int]

#: One int for every spatial dimension, or a sequence with one per dimension.
IntOrSequence = Union[int, Sequence[int]]

#: ``"VALID"``, ``"SAME"``, an int (symmetric on every dim), a sequence of ints
#: (symmetric, one per dim, as PyTorch) or a sequence of ``(low, high)`` pairs.
PaddingLike = Union[str, int, Sequence[Union[int, tuple[int, int]]]]

#: An adaptive output size: one int for every dim, or one per dim where
#: ``None`` keeps that dim's input size.
OutputSizeLike = Union[int, Sequence[Union[int, None]]]

#: A binary reduction ``(a, b) -> c`` such as ``jax.lax.max``.
Reducer = Callable[[jax.Array, jax.Array], jax.Array]
