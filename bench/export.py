"""``python -m bench.export``: an artifact exported with symbolic sizes
against the same function compiled for the concrete shape.

With symbolic spatial sizes jaxpool takes a lowering that needs no concrete
size (``jaxpool._lowering.symbolic_plan``, the default plan of platforms
without a table); at concrete sizes it takes the platform's tuned plan. Both
run in this process, interleaved, forward and forward+backward; the ratio
is the exported artifact's median time over the concrete one's (> 1: the
artifact is slower).

  python -m bench.export            # a few configurations, 7 repeats
  python -m bench.export --repeats 3
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

import jaxpool
from bench.suite import median_call_ms

#: (name, function, input shape): channels-last, float32.
CASES = (
    ("max 3x3/2 pad 1", lambda x: jaxpool.max_pool(x, 3, 2, 1),
     (8, 112, 112, 64)),
    ("avg 3x3/2 pad 1 ceil", lambda x: jaxpool.avg_pool(
        x, 3, 2, 1, ceil_mode=True), (8, 56, 56, 64)),
    ("adaptive max 13 -> 6", lambda x: jaxpool.adaptive_max_pool(x, 6),
     (8, 13, 13, 256)),
    ("sppf 5 x3", jaxpool.sppf, (8, 20, 20, 256)),
)


def _both(fn):
  return jax.grad(lambda x: jnp.sum(jnp.sin(fn(x))))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.export")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  shape = export.symbolic_shape("b, h, w, c",
                                constraints=("h >= 13", "w >= 13"))
  spec = jax.ShapeDtypeStruct(shape, jnp.float32)
  print(f"{'case':26s} {'pass':9s} {'concrete ms':>12s} {'exported ms':>12s}"
        f" {'ratio':>6s}")
  for name, fn, size in CASES:
    x = jnp.asarray(np.random.default_rng(0).standard_normal(size),
                    jnp.float32)
    for label, f in (("forward", fn), ("fwd+bwd", _both(fn))):
      concrete = jax.jit(f)
      # Jitted, as a server calls it: an eager call re-dispatches each time.
      exported = jax.jit(export.export(jax.jit(f))(spec).call)
      # Interleaved, so that the machine's load hits both alike.
      pairs = [(median_call_ms(concrete, x, repeats=args.repeats),
                median_call_ms(exported, x, repeats=args.repeats))
               for _ in range(3)]
      c = float(np.median([p[0] for p in pairs]))
      e = float(np.median([p[1] for p in pairs]))
      print(f"{name:26s} {label:9s} {c:12.2f} {e:12.2f} {e / c:6.2f}")


if __name__ == "__main__":
  main()
