"""Compile and run times of adaptive average and max pooling.

Three 2-D cases, 224 -> 7 (sizes divide: a plain windowed reduction),
13 -> 6 (they do not, but the bins are a regular window 3, stride 2) and
64 -> 31 (irregular bins: a matrix product for avg, running maxima read
at each bin's start for max), on a channels-last
``(batch, n, n, channels)`` float32 input, for jaxpool, PyTorch
(``F.adaptive_*_pool2d``, the better of NCHW and channels_last) and
Equinox (``eqx.nn.AdaptiveAvgPool2d`` / ``AdaptiveMaxPool2d``, vmapped over
the batch on NCHW).

Forward is the pooling alone; forward+backward is one VJP with a fixed
random cotangent. Run times are the median of several calls after a
warm-up; a JAX compile time is ``jax.jit(f).lower(...).compile()``. Each
row also gives the largest forward difference from PyTorch.

Run ``python -m bench.adaptive [--quick]`` for a table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool

CASES = ((224, 7), (13, 6), (64, 31))
OPS = ("avg", "max")


def _shape(n: int, quick: bool) -> tuple[int, int, int, int]:
  if quick:
    return (2, n, n, 8) if n > 100 else (2, n, n, 16)
  return (8, n, n, 64)


def _median_time(fn: Callable[[], object], repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _jax_times(forward: Callable, x: jax.Array, ct: jax.Array,
               repeats: int) -> dict:
  """Compile and run times of ``forward`` and of its VJP, under jit."""

  def both(x, ct):
    y, vjp = jax.vjp(forward, x)
    return y, vjp(ct)[0]

  result = {}
  for name, fn, args in (("fwd", forward, (x,)), ("fwdbwd", both, (x, ct))):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    result[f"compile_{name}_s"] = time.perf_counter() - start
    result[f"{name}_ms"] = 1e3 * _median_time(
        lambda c=compiled, a=args: jax.block_until_ready(c(*a)), repeats)
  result["y"] = np.asarray(forward(x))
  return result


def _jaxpool(op: str, x: jax.Array, o: int, ct: jax.Array,
             repeats: int) -> dict:
  pool = jaxpool.adaptive_avg_pool if op == "avg" else (
      jaxpool.adaptive_max_pool)
  return _jax_times(lambda x: pool(x, (o, o)), x, ct, repeats)


def _equinox(op: str, x: jax.Array, o: int, ct: jax.Array,
             repeats: int) -> dict:
  import equinox as eqx  # pylint: disable=g-import-not-at-top
  cls = eqx.nn.AdaptiveAvgPool2d if op == "avg" else eqx.nn.AdaptiveMaxPool2d
  layer = cls(target_shape=(o, o))

  def forward(x):
    return jnp.transpose(jax.vmap(layer)(jnp.transpose(x, (0, 3, 1, 2))),
                         (0, 2, 3, 1))

  return _jax_times(forward, x, ct, repeats)


def _torch(op: str, x: np.ndarray, o: int, ct: np.ndarray,
           repeats: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  pool = F.adaptive_avg_pool2d if op == "avg" else F.adaptive_max_pool2d
  best = None
  for layout in ("NCHW", "channels_last"):
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    ctt = torch.from_numpy(ct).permute(0, 3, 1, 2)
    fmt = torch.channels_last if layout == "channels_last" else (
        torch.contiguous_format)
    xt = xt.contiguous(memory_format=fmt).requires_grad_()
    ctt = ctt.contiguous(memory_format=fmt)

    def forward(xt=xt):
      with torch.no_grad():
        return pool(xt, o)

    def both(xt=xt, ctt=ctt):
      xt.grad = None
      pool(xt, o).backward(ctt)

    row = {"layout": layout, "compile_fwd_s": None, "compile_fwdbwd_s": None,
           "fwd_ms": 1e3 * _median_time(forward, repeats),
           "fwdbwd_ms": 1e3 * _median_time(both, repeats),
           "y": forward().permute(0, 2, 3, 1).numpy()}
    if best is None or row["fwdbwd_ms"] < best["fwdbwd_ms"]:
      best = row
  return best


def run(quick: bool = False) -> list[dict]:
  """Times adaptive pooling of each case by each implementation.

  Args:
    quick: a small input and few repeats, for a smoke test.

  Returns:
    one dict per (case, op, implementation) with keys ``case``, ``op``,
    ``impl``, ``shape``, ``compile_fwd_s``, ``fwd_ms``,
    ``compile_fwdbwd_s``, ``fwdbwd_ms`` (compile times are None for
    PyTorch), ``layout`` (PyTorch's faster one) and ``max_diff_vs_torch``;
    an implementation that fails has ``error`` instead of the figures.
  """
  repeats = 3 if quick else 10
  rng = np.random.default_rng(0)
  rows = []
  for n, o in CASES:
    shape = _shape(n, quick)
    x_np = rng.standard_normal(shape, dtype=np.float32)
    ct_np = rng.standard_normal((shape[0], o, o, shape[3]), dtype=np.float32)
    x, ct = jnp.asarray(x_np), jnp.asarray(ct_np)
    for op in OPS:
      results = {}
      for impl, fn, args in (("torch", _torch, (x_np, o, ct_np)),
                             ("jaxpool", _jaxpool, (x, o, ct)),
                             ("equinox", _equinox, (x, o, ct))):
        try:
          results[impl] = fn(op, *args, repeats)
        except Exception as e:  # pylint: disable=broad-except
          results[impl] = {"error": f"{type(e).__name__}: {e}"[:200]}
      reference = results["torch"].get("y")
      for impl, result in results.items():
        row = {"case": f"{n}->{o}", "op": op, "impl": impl, "shape": shape,
               "layout": result.pop("layout", "NHWC")}
        y = result.pop("y", None)
        row.update(result)
        if y is not None and reference is not None:
          row["max_diff_vs_torch"] = float(np.max(np.abs(y - reference)))
        rows.append(row)
  return rows


def _format(rows: list[dict]) -> str:
  columns = ("case", "op", "impl", "layout", "compile_fwd_s", "fwd_ms",
             "compile_fwdbwd_s", "fwdbwd_ms", "max_diff_vs_torch")
  lines = [" | ".join(columns)]
  for row in rows:
    if "error" in row:
      lines.append(f"{row['case']} | {row['op']} | {row['impl']} | "
                   f"error: {row['error']}")
      continue
    cells = []
    for c in columns:
      v = row.get(c)
      cells.append("-" if v is None else
                   f"{v:.3g}" if isinstance(v, float) else str(v))
    lines.append(" | ".join(cells))
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="small inputs, few repeats")
  args = parser.parse_args()
  shapes = sorted({str(_shape(n, args.quick)) for n, _ in CASES})
  import torch  # pylint: disable=g-import-not-at-top
  print(f"input shapes (batch, n, n, C): {', '.join(shapes)}; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}; torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads")
  print(_format(run(quick=args.quick)))


if __name__ == "__main__":
  main()
