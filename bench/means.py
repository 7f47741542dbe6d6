"""Forward+backward times of the literature's poolings against their references.

Each case runs jaxpool (under ``jax.jit``, channels-last, the default) and
its reference implementation in PyTorch: timm's ``SelectAdaptivePool2d``
for ``avgmax`` / ``catavgmax`` (NCHW, its default format),
``antialiased_cnns.BlurPool`` (and its max-blur, ``MaxPool2d(2, 1)`` then
``BlurPool``), and for the others the straightforward PyTorch transcription
of the paper's formula (SoftPool's reference code; cirtorch's GeM; APS's
polyphase selection), the faster of NCHW and channels-last memory formats.
Fractional and stochastic pooling are in ``bench.research``. Both
run one thread (XLA's CPU client and ``torch.set_num_threads(1)``), side by
side: each of 3 rounds times a batch of calls of each, and the medians of
the rounds are compared. Forward+backward is the gradient of
``sum(pool(x) * w)`` for a fixed random ``w``.

Run ``python3 -m bench.means [--quick] [--cases blur,aps]``.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
  # One thread each: set before JAX starts its CPU client.
  os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") +
      " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool


def _timm_layers():
  # timm imports torchvision: tests/torchvision_cpu.py makes it importable
  # beside the CPU build of torch.
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
  import torchvision_cpu  # noqa: F401  pylint: disable=unused-import
  import timm.layers
  return timm.layers


def cases(quick: bool) -> list[tuple[str, tuple[int, ...], Callable, Callable,
                                     str]]:
  """(name, NHWC shape, jaxpool fn, torch fn of an NCHW-shaped tensor,
  torch memory format: "best" of both, "contiguous", or "NCHW": contiguous
  and jaxpool too is given the NCHW array)."""
  import torch
  import torch.nn.functional as F
  layers = _timm_layers()
  n = 2 if quick else 8
  window = (n, 64, 64, 32)
  head = (2 * n, 7, 7, 512)
  a = torch.tensor(0.3, requires_grad=True)
  r = torch.tensor(2.0, requires_grad=True)
  p = torch.tensor(3.0, requires_grad=True)
  gate = torch.full((1, 1, 2, 2), 0.1, requires_grad=True)

  def gated(x):
    g = torch.sigmoid(F.conv2d(x, gate.expand(x.shape[1], 1, 2, 2),
                               stride=2, groups=x.shape[1]))
    return g * F.max_pool2d(x, 2) + (1 - g) * F.avg_pool2d(x, 2)

  def lse(x):
    # Windows 2x2, stride 2: the window elements as two dims.
    nb, c, h, w = x.shape
    v = x.reshape(nb, c, h // 2, 2, w // 2, 2) * r
    return torch.logsumexp(v, dim=(3, 5)) / r

  def soft(x):
    # SoftPool's reference code (alexandrosstergiou/SoftPool, soft_pool2d).
    e = torch.exp(x)
    return F.avg_pool2d(x * e, 2).div_(F.avg_pool2d(e, 2))

  def aps(x):
    # APS's rule (Chaman & Dokmanic 2021; their ApsDown with stride 2, no
    # blur): of the four polyphase components keep the one of largest norm.
    comps = torch.stack([x[:, :, i::2, j::2] for i in (0, 1)
                         for j in (0, 1)], 1)
    best = comps.flatten(2).norm(dim=2).argmax(1)
    return comps[torch.arange(x.shape[0]), best]

  import antialiased_cnns
  channels = window[-1]
  blur = antialiased_cnns.BlurPool(channels, filt_size=4, stride=2)
  max_blur = torch.nn.Sequential(torch.nn.MaxPool2d(2, 1), blur)
  avgmax = layers.SelectAdaptivePool2d(pool_type="avgmax")
  catavgmax = layers.SelectAdaptivePool2d(pool_type="catavgmax")
  avgmax2 = layers.SelectAdaptivePool2d(output_size=2, pool_type="avgmax")
  cl = "best"
  return [
      ("soft_pool 2x2", window,
       lambda x: jaxpool.soft_pool(x, window_shape=(2, 2)), soft, cl),
      ("lse_pool 2x2 r=2", window,
       lambda x: jaxpool.lse_pool(x, 2.0, window_shape=(2, 2)), lse,
       "contiguous"),
      ("mixed_pool 2x2 a=0.3", window,
       lambda x: jaxpool.mixed_pool(x, 0.3, window_shape=(2, 2)),
       lambda x: a * F.max_pool2d(x, 2) + (1 - a) * F.avg_pool2d(x, 2), cl),
      ("gated_pool 2x2", window,
       lambda x: jaxpool.gated_pool(x, jnp.full((2, 2), 0.1),
                                    window_shape=(2, 2)), gated, cl),
      ("gem_pool 3x3 s2 p=3", window,
       lambda x: jaxpool.gem_pool(jnp.abs(x), 3.0, window_shape=(3, 3),
                                  strides=2),
       lambda x: F.avg_pool2d(x.abs().clamp(min=1e-6).pow(p), 3, 2).pow(1 / p),
       cl),
      ("gem_pool global p=3", head,
       lambda x: jaxpool.gem_pool(jnp.abs(x), 3.0),
       lambda x: F.avg_pool2d(x.abs().clamp(min=1e-6).pow(p),
                              x.shape[-2:]).pow(1 / p), cl),
      ("blur_pool 4 s2 reflect", window, jaxpool.blur_pool, blur, cl),
      ("max_blur_pool 4 s2 reflect", window, jaxpool.max_blur_pool,
       max_blur, cl),
      ("aps_pool s2", window, jaxpool.aps_pool, aps, cl),
      ("adaptive_avgmax_pool 1", head, jaxpool.adaptive_avgmax_pool, avgmax,
       "contiguous"),
      ("adaptive_catavgmax_pool 1", head, jaxpool.adaptive_catavgmax_pool,
       catavgmax, "contiguous"),
      ("adaptive_avgmax_pool 1 (ResNet-50)", (n, 7, 7, 2048),
       jaxpool.adaptive_avgmax_pool, avgmax, "contiguous"),
      # The NCHW input as given to timm, no transpose.
      ("  channels_first=True", (n, 7, 7, 2048),
       lambda x: jaxpool.adaptive_avgmax_pool(x, channels_first=True),
       avgmax, "NCHW"),
      ("adaptive_avgmax_pool 2 (14x14)", (n, 14, 14, 256),
       lambda x: jaxpool.adaptive_avgmax_pool(x, 2), avgmax2, "contiguous"),
  ]


def _time(fn: Callable[[], Any], calls: int) -> float:
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return (time.perf_counter() - start) / calls * 1e3


def measure(shape, jax_fn, torch_fn, fmt: str, calls: int,
            rounds: int = 3) -> tuple[float, float]:
  import torch
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  x_jax = np.moveaxis(x, -1, 1).copy() if fmt == "NCHW" else x
  y_shape = jax.eval_shape(jax_fn, x_jax).shape
  w = rng.standard_normal(y_shape).astype(np.float32)
  grad = jax.jit(jax.grad(lambda x, w: jnp.vdot(jax_fn(x), w)))
  xj, wj = jnp.asarray(x_jax), jnp.asarray(w)
  jax_call = lambda: grad(xj, wj).block_until_ready()
  formats = ((torch.contiguous_format, torch.channels_last) if fmt == "best"
             else (torch.contiguous_format,))
  torch_calls = []
  for memory_format in formats:
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).contiguous(
        memory_format=memory_format).requires_grad_()
    yt = torch_fn(xt)
    wt = torch.from_numpy(rng.standard_normal(tuple(yt.shape)).astype(
        np.float32))

    def torch_call(xt=xt, wt=wt):
      xt.grad = None
      torch_fn(xt).backward(wt)

    torch_call()
    torch_calls.append(torch_call)
  jax_call()
  jax_ms: list[float] = []
  torch_ms: list[list[float]] = [[] for _ in torch_calls]
  for _ in range(rounds):
    jax_ms.append(_time(jax_call, calls))
    for times, call in zip(torch_ms, torch_calls):
      times.append(_time(call, calls))
  return statistics.median(jax_ms), min(statistics.median(t)
                                        for t in torch_ms)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--cases", default="",
                      help="comma-separated prefixes of the case names to run")
  args = parser.parse_args()
  import torch
  torch.set_num_threads(1)
  print(f"jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread), float32, forward+backward, "
        "median of 3 rounds")
  print(f"{'case':34s} {'shape (NHWC)':18s} {'jaxpool ms':>10s} "
        f"{'ref ms':>9s} {'jaxpool/ref':>11s}")
  prefixes = tuple(p for p in args.cases.split(",") if p)
  for name, shape, jax_fn, torch_fn, fmt in cases(args.quick):
    if prefixes and not name.startswith(prefixes):
      continue
    jax_ms, torch_ms = measure(shape, jax_fn, torch_fn, fmt,
                               calls=5 if args.quick else 20)
    print(f"{name:34s} {str(shape):18s} {jax_ms:10.3f} {torch_ms:9.3f} "
          f"{jax_ms / torch_ms:10.2f}x")


if __name__ == "__main__":
  main()
