"""``python -m bench.research``: research poolings against their references.

Forward+backward (the value and input gradient of ``sum(pool(x) * w)``) of
jaxpool's fractional max pooling and stochastic pooling (training and
evaluation forms) against their references on the CPU, one thread each:

* fractional: ``torch.nn.functional.fractional_max_pool2d`` (NCHW, its
  native layout) against :func:`jaxpool.fractional_max_pool` (channels-last,
  jaxpool's), the same output size;
* stochastic: a direct PyTorch transcription of the paper's definition
  (``F.unfold`` the windows, ``p = a / sum(a)``, draw by the running sum of
  ``p``, ``gather``; evaluation ``sum(p * a)``, ``F.fold`` not needed)
  against :func:`jaxpool.stochastic_pool`.

Each run times a few calls of each, interleaved; the table gives the median
of 3 runs per implementation, and the ratio jaxpool / reference (below 1:
jaxpool is faster).
"""

from __future__ import annotations

import os

# One thread for XLA, as for torch below: set before JAX starts.
_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
if __name__ == "__main__" and _FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAGS}"

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import jaxpool

RUNS = 3


def _jax_runner(pool: Callable[[jax.Array], jax.Array], x: np.ndarray
                ) -> Callable[[], object]:
  """Value and gradient of ``sum(pool(x) * w)``, jitted, ready to call."""
  xj = jnp.asarray(x)
  w = jnp.asarray(np.random.default_rng(1).standard_normal(
      jax.eval_shape(pool, xj).shape, np.float32))
  both = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(pool(x) * w)))
  jax.block_until_ready(both(xj, w))
  return lambda: jax.block_until_ready(both(xj, w))


def _torch_runner(pool: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray
                  ) -> Callable[[], object]:
  """``pool(x)`` and ``y.backward(w)`` into a fresh gradient."""
  xt = torch.tensor(x)
  with torch.no_grad():
    shape = pool(xt).shape
  w = torch.tensor(np.random.default_rng(1).standard_normal(
      tuple(shape)).astype(np.float32))

  def run():
    xg = xt.detach().requires_grad_(True)
    pool(xg).backward(w)
    return xg.grad

  run()
  return run


# ---------------------------------------------------------------------------
# The paper's stochastic pooling, transcribed to PyTorch (the reference).


def _windows(x: torch.Tensor, k: int, s: int) -> tuple[torch.Tensor, tuple]:
  n, c, h, w = x.shape
  cols = F.unfold(x, k, stride=s)  # (N, C * k * k, L)
  oh, ow = (h - k) // s + 1, (w - k) // s + 1
  return cols.view(n, c, k * k, oh * ow), (n, c, oh, ow)


def torch_stochastic_train(x: torch.Tensor, u: torch.Tensor, k: int,
                           s: int) -> torch.Tensor:
  """Per window: ``p = a / sum(a)``, the element where the running sum of
  ``p`` first exceeds the uniform ``u`` (shape ``(N, C, L)``)."""
  a, shape = _windows(x, k, s)
  total = a.sum(2, keepdim=True)
  p = torch.where(total > 0, a / total.clamp_min(1e-30), 0)
  index = (p.cumsum(2) <= u.unsqueeze(2)).sum(2, keepdim=True)
  index = index.clamp(max=k * k - 1)
  return a.gather(2, index).view(shape)


def torch_stochastic_eval(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
  """Per window: ``sum(p * a)``, ``p = a / sum(a)``."""
  a, shape = _windows(x, k, s)
  total = a.sum(2, keepdim=True)
  p = torch.where(total > 0, a / total.clamp_min(1e-30), 0)
  return (p * a).sum(2).view(shape)


# ---------------------------------------------------------------------------


def cases(shape: tuple[int, int, int, int]):
  """``(name, jaxpool runner, reference runner)`` for an NCHW ``shape``."""
  n, c, h, w = shape
  rng = np.random.default_rng(0)
  x_nchw = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
  x_nhwc = np.ascontiguousarray(np.moveaxis(x_nchw, 1, -1))
  out = (h // 2, w // 2)
  samples = rng.random((n, c, 2)).astype(np.float32)
  key = jax.random.key(0)
  u = torch.tensor(rng.random((n, c, out[0] * out[1])).astype(np.float32))
  yield ("fractional_max_pool 2x2 -> 1/2", _jax_runner(
      lambda x: jaxpool.fractional_max_pool(x, 2, out, samples=samples),
      x_nhwc), _torch_runner(
          lambda x: F.fractional_max_pool2d(
              x, 2, output_size=out,
              _random_samples=torch.tensor(samples)), x_nchw))
  yield ("stochastic_pool train 2x2/2", _jax_runner(
      lambda x: jaxpool.stochastic_pool(x, 2, key=key), x_nhwc),
         _torch_runner(lambda x: torch_stochastic_train(x, u, 2, 2), x_nchw))
  yield ("stochastic_pool eval 2x2/2", _jax_runner(
      lambda x: jaxpool.stochastic_pool(x, 2, deterministic=True), x_nhwc),
         _torch_runner(lambda x: torch_stochastic_eval(x, 2, 2), x_nchw))


def _run_ms(run: Callable[[], object], calls: int) -> float:
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shape", type=int, nargs=4, default=(8, 32, 64, 64),
                      help="NCHW input shape")
  parser.add_argument("--calls", type=int, default=5,
                      help="calls per run (the run's time is their median)")
  args = parser.parse_args()
  torch.set_num_threads(1)
  print(f"jax {jax.__version__}, torch {torch.__version__}, 1 thread each, "
        f"input NCHW {tuple(args.shape)} float32, fwd+bwd, median of {RUNS} "
        f"runs")
  print(f"{'case':34s} {'jaxpool ms':>11s} {'ref ms':>9s} {'ratio':>7s}")
  for name, ours, ref in cases(tuple(args.shape)):
    runs: dict[str, list[float]] = {"jaxpool": [], "ref": []}
    for i in range(RUNS):
      # Side by side, alternating which goes first.
      order = [("jaxpool", ours), ("ref", ref)]
      for label, run in order if i % 2 == 0 else order[::-1]:
        runs[label].append(_run_ms(run, args.calls))
    a, b = (statistics.median(runs[k]) for k in ("jaxpool", "ref"))
    print(f"{name:34s} {a:11.2f} {b:9.2f} {a / b:7.2f}")


if __name__ == "__main__":
  main()
