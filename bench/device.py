"""The device the benchmark runs on: its memory bandwidth, peak and measured.

A pooling reads its input and writes its (smaller) output once, so its
speed limit is memory bandwidth: each row reports jaxpool's achieved
bandwidth (bytes moved / time) against two references, the device's
datasheet peak where it is known and a copy measured in the same run (what
an ideal elementwise kernel gets on this device).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Datasheet HBM/DRAM bandwidth, GB/s, by a lower-case substring of JAX's
# device_kind; the first match wins (more specific names first).
PEAK_GBPS = (
    ("h200", 4800.0),
    ("h100 nvl", 3900.0),
    ("h100 pcie", 2000.0),
    ("h100", 3350.0),
    ("gh200", 4000.0),
    ("b200", 8000.0),
    ("a100-sxm4-80gb", 2039.0),
    ("a100 80gb pcie", 1935.0),
    ("a100", 1555.0),
    ("l40s", 864.0),
    ("a10g", 600.0),
    ("l4", 300.0),
    ("v100", 900.0),
    ("t4", 320.0),
    ("rtx 4090", 1008.0),
    ("mi300x", 5300.0),
    ("mi250", 3277.0),
    ("tpu v6 lite", 1640.0),
    ("tpu v5p", 2765.0),
    ("tpu v5 lite", 819.0),
    ("tpu v5e", 819.0),
    ("tpu v4", 1200.0),
)


def peak_gbps(device_kind: str) -> float | None:
  """The datasheet bandwidth of ``device_kind``, or None if unknown."""
  kind = device_kind.lower()
  return next((gbps for name, gbps in PEAK_GBPS if name in kind), None)


def copy_gbps(megabytes: int = 256, repeats: int = 10) -> float:
  """Bandwidth of ``x + 1`` in place: one read and one write per element.

  The input is donated, so no call pays for a fresh output buffer (on a CPU
  its first-touch page faults would dominate).
  """
  x = jnp.zeros((megabytes * 2**20 // 4,), jnp.float32)
  nbytes = x.nbytes
  f = jax.jit(lambda x: x + 1, donate_argnums=0)
  x = jax.block_until_ready(f(x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    x = jax.block_until_ready(f(x))
    times.append(time.perf_counter() - start)
  return 2 * nbytes / sorted(times)[len(times) // 2] / 1e9


def torch_device() -> str:
  """``"cuda"`` when JAX runs on a GPU and torch sees one, else ``"cpu"``.

  PyTorch is compared on the same kind of device as JAX: cuDNN's pooling on
  a GPU run, its CPU kernels on a CPU run.
  """
  if jax.default_backend() != "gpu":
    return "cpu"
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return "cpu"
  return "cuda" if torch.cuda.is_available() else "cpu"
