"""Compile times of the public functions for large windows, 1-D to 3-D.

For each function, window and dtype: the seconds of
``jax.jit(f).lower(x).compile()`` for the forward (``f`` the pooling) and
for forward+backward (``f = jax.value_and_grad(sum(pool(x) * w))``), and the
number of instructions of the compiled forward+backward HLO. Inputs are
small (compile time does not depend on them much); the case list is the
issue's (``max_pool_with_indices`` 8x8x8/2 on ``(1, 19, 10, 10, 10)``
bfloat16 compiled in 56-60 s) and its neighbours.

  python -m bench.compile                 # every case, a few minutes
  python -m bench.compile --cases indices --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool

DTYPES = ("float32", "bfloat16")


def _first(fn: Callable) -> Callable:
  """``fn`` returning ``(values, indices)``, marked so that both are kept."""
  fn.with_indices = True
  return fn


def cases() -> list[tuple[str, Callable, tuple[int, ...]]]:
  """``(name, x -> y, channels-first input shape)`` of every case."""
  cf = dict(channels_first=True)
  s3, s2, s1 = (1, 19, 10, 10, 10), (2, 8, 20, 20), (2, 8, 64)
  result = []
  for k, s in ((8, 2), (7, 1), (4, 1), (3, 1)):
    w3 = (k,) * 3
    result += [
        (f"max_pool_with_indices {k}^3/{s}",
         _first(lambda x, w3=w3, s=s: jaxpool.max_pool_with_indices(
             x, w3, s, **cf)), s3),
        (f"max_pool {k}^3/{s}",
         lambda x, w3=w3, s=s: jaxpool.max_pool(x, w3, s, **cf), s3),
    ]
  result += [
      ("max_pool (2,2,4)/1", lambda x: jaxpool.max_pool(x, (2, 2, 4), 1, **cf),
       s3),
      ("min_pool 8^3/1", lambda x: jaxpool.min_pool(x, (8,) * 3, 1, **cf), s3),
      ("avg_pool 8^3/1", lambda x: jaxpool.avg_pool(x, (8,) * 3, 1, **cf), s3),
      ("lp_pool 8^3/1", lambda x: jaxpool.lp_pool(x, 2.0, (8,) * 3, 1, **cf),
       s3),
      ("max_pool_with_indices 8x8/1",
       _first(lambda x: jaxpool.max_pool_with_indices(x, (8, 8), 1, **cf)), s2),
      ("max_pool 8x8/1", lambda x: jaxpool.max_pool(x, (8, 8), 1, **cf), s2),
      ("max_pool_with_indices 8/1",
       _first(lambda x: jaxpool.max_pool_with_indices(x, (8,), 1, **cf)), s1),
      ("adaptive_max_pool 10^3->3^3",
       lambda x: jaxpool.adaptive_max_pool(x, (3, 3, 3), **cf), s3),
      ("spp_yolo 3-D (5,9,13)",
       lambda x: jaxpool.spp_yolo(x, [(5,) * 3, (9,) * 3], **cf),
       (1, 4, 13, 13, 13)),
  ]
  return result


def _loss(fn):
  """``sum(y * w)``, and the indices as aux, so that XLA keeps them."""
  if getattr(fn, "with_indices", False):
    def loss(x, w):
      y, i = fn(x)
      return jnp.sum(y.astype(jnp.float32) * w), i
    return loss
  return lambda x, w: (jnp.sum(fn(x).astype(jnp.float32) * w), ())


def measure(fn: Callable, shape, dtype: str) -> dict:
  x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)
  start = time.perf_counter()
  jax.jit(fn).lower(x).compile()
  fwd = time.perf_counter() - start
  out = jax.eval_shape(fn, x)
  out = out[0] if isinstance(out, tuple) else out
  w = jnp.ones(out.shape, jnp.float32)
  start = time.perf_counter()
  compiled = jax.jit(jax.value_and_grad(_loss(fn), has_aux=True)).lower(x, w).compile()
  grad = time.perf_counter() - start
  ops = sum(" = " in line for line in compiled.as_text().splitlines())
  return {"compile_fwd_s": fwd, "compile_fwdbwd_s": grad, "hlo_ops": ops}


def run(quick: bool = False, match: str = "",
        dtypes=DTYPES) -> list[dict]:
  rows = []
  for name, fn, shape in cases():
    if match not in name or (quick and "3" not in name):
      continue
    for dtype in dtypes:
      row = {"case": name, "dtype": dtype, "shape": list(shape)}
      row.update(measure(fn, shape, dtype))
      print(f"{name:34s} {dtype:9s} fwd {row['compile_fwd_s']:7.2f} s  "
            f"fwd+bwd {row['compile_fwdbwd_s']:7.2f} s  "
            f"{row['hlo_ops']:6d} HLO ops", flush=True)
      rows.append(row)
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.compile",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--cases", default="")
  parser.add_argument("--dtypes", default=",".join(DTYPES))
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}", flush=True)
  run(match=args.cases, dtypes=args.dtypes.split(","))


if __name__ == "__main__":
  main()
