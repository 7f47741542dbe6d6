"""RoI Align forward+backward: jaxpool against torchvision, one thread.

``torchvision.ops.roi_align`` runs here as its pure-PyTorch implementation
(torchvision's C++ ops do not load beside the CPU build of torch, see
``tests/torchvision_cpu.py``), eagerly (its ``torch.compile`` wrapper is
turned off). Its adaptive form (``sampling_ratio=-1``) enumerates ``H x W``
samples per bin and masks them, so at detection size it would need tens of
GB; that case is run on 8 boxes for the comparison, and on 128 for jaxpool
alone.

A detection-sized case: a ``(1, 50, 50, 256)`` map (stride 16 of an 800x800
image), boxes from 32 to 400 pixels, 7x7 output; and the issue's ``(2, 50,
68, 256)`` map with 512 boxes. Forward+backward is one VJP with a fixed
random cotangent; times are the median of 3 calls after a warm-up, the two
libraries side by side in one run; jaxpool's compile time is
``jax.jit(f).lower(...).compile()``.

RoI max pooling: torchvision's ``roi_pool`` has no pure-PyTorch form, so
its reference is a C transcription of torchvision's CPU kernel
(``bench/roi_pool_kernel.c``, built here with the system C compiler, -O3;
skipped without one), forward and forward+backward (the kernel's backward
from its argmax), on the issue's case and two others; each the median of 9
calls, jaxpool's and the kernel's in turn.

Run ``python -m bench.roi``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false"
                           " intra_op_parallelism_threads=1")

import ctypes  # noqa: E402
import functools  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import jaxpool  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import torchvision_cpu as tv  # noqa: E402

#: (name, map shape NHWC, boxes, sampling_ratio, with torchvision)
CASES = (
    ("50x50x256, 128 boxes, ratio 2", (1, 50, 50, 256), 128, 2, True),
    ("50x50x256, 8 boxes, ratio -1", (1, 50, 50, 256), 8, -1, True),
    ("50x50x256, 128 boxes, ratio -1", (1, 50, 50, 256), 128, -1, False),
    ("2x50x68x256, 512 boxes, ratio 2", (2, 50, 68, 256), 512, 2, True),
)


#: (map shape NHWC, boxes, output size) for roi_pool.
POOL_CASES = (
    ((2, 50, 68, 256), 512, 7),
    ((1, 38, 50, 512), 128, 7),
    ((2, 25, 34, 64), 512, 7),
)


def _boxes(n_img: int, k: int, hw: tuple[int, int]) -> np.ndarray:
  rng = np.random.default_rng(0)
  img_h, img_w = hw[0] * 16, hw[1] * 16
  size = rng.uniform(32, 400, (k, 2))
  x1 = rng.uniform(0, img_w - size[:, 0])
  y1 = rng.uniform(0, img_h - size[:, 1])
  return np.stack([rng.integers(0, n_img, k), x1, y1, x1 + size[:, 0],
                   y1 + size[:, 1]], 1).astype(np.float32)


def _interleaved_medians(calls, repeats: int = 9) -> list[float]:
  """The median time of each of ``calls`` after a warm-up, called in turn
  round by round (the order reversed every other round), so that a machine
  whose speed drifts slows them alike."""
  for fn in calls:
    fn()
  times = [[] for _ in calls]
  for r in range(repeats):
    order = list(enumerate(calls))
    for i, fn in order if r % 2 == 0 else order[::-1]:
      start = time.perf_counter()
      fn()
      times[i].append(time.perf_counter() - start)
  return [statistics.median(t) for t in times]


def _median(fn, repeats: int = 3) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  """jaxpool.roi_align against torchvision's (see the module doc)."""
  torch.set_num_threads(1)
  print(f"{'case':34s} {'compile s':>9s} {'jaxpool ms':>10s} "
        f"{'torchvision ms':>14s} {'ratio':>6s}")
  for name, shape, k, ratio, with_tv in CASES:
    n, h, w, c = shape
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    boxes = _boxes(n, k, (h, w))
    ct = np.random.default_rng(2).standard_normal(
        (k, 7, 7, c)).astype(np.float32)

    def both(x, b, ct):
      y, vjp = jax.vjp(lambda x: jaxpool.roi_align(x, b, 7, 1 / 16, ratio),
                       x)
      return y, vjp(ct)[0]

    args = (jnp.asarray(x), jnp.asarray(boxes), jnp.asarray(ct))
    start = time.perf_counter()
    compiled = jax.jit(both).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax_ms = 1e3 * _median(lambda: jax.block_until_ready(compiled(*args)))
    tv_text, ratio_text = "-", "-"
    if with_tv:
      xt = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)
      bt = torch.tensor(boxes)
      gt = torch.tensor(np.moveaxis(ct, -1, 1).copy())

      def torch_both():
        xt.grad = None
        y = tv.ops.roi_align(xt, bt, 7, 1 / 16, ratio)
        y.backward(gt)
        return y

      y_t = torch_both()
      y_j, _ = compiled(*args)
      err = float(np.abs(np.moveaxis(np.asarray(y_j), -1, 1)
                         - y_t.detach().numpy()).max())
      tv_ms = 1e3 * _median(torch_both)
      tv_text = f"{tv_ms:14.1f}"
      ratio_text = f"{tv_ms / jax_ms:6.2f}"
      name = f"{name} (max diff {err:.1e})"
    print(f"{name:34s} {compile_s:9.2f} {jax_ms:10.1f} {tv_text:>14s} "
          f"{ratio_text:>6s}", flush=True)


def _kernel() -> ctypes.CDLL | None:
  """bench/roi_pool_kernel.c, built with the system C compiler; None
  without one."""
  cc = shutil.which(os.environ.get("CC", "cc"))
  if cc is None:
    return None
  source = os.path.join(os.path.dirname(__file__), "roi_pool_kernel.c")
  library = os.path.join(tempfile.mkdtemp(prefix="jaxpool-bench-"),
                         "roi_pool_kernel.so")
  subprocess.run([cc, "-O3", "-shared", "-fPIC", "-o", library, source,
                  "-lm"], check=True)
  return ctypes.CDLL(library)


def _kernel_calls(lib: ctypes.CDLL, x: np.ndarray, boxes: np.ndarray,
                  out: int, ct: np.ndarray):
  """The kernel's forward, and forward+backward, on NHWC ``x`` and ``ct``
  (laid out NCHW first, as torchvision's kernel reads them)."""
  n, h, w, c = x.shape
  k = boxes.shape[0]
  x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
  ct = np.ascontiguousarray(np.moveaxis(ct, -1, 1))
  ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)

  def forward():
    # Zeroed, as torchvision allocates them.
    y = np.zeros((k, c, out, out), np.float32)
    argmax = np.zeros((k, c, out, out), np.int32)
    lib.roi_pool_forward(ptr(x), ctypes.c_float(1 / 16), c, h, w, out, out,
                         ptr(boxes), k, ptr(y), ptr(argmax))
    return y, argmax

  def both():
    y, argmax = forward()
    dx = np.zeros(x.shape, np.float32)
    lib.roi_pool_backward(ptr(ct), ptr(argmax), k, c, h, w, out, out,
                          ptr(dx), ptr(boxes))
    return y, dx

  return forward, both


def pool_main() -> None:
  """jaxpool.roi_pool against torchvision's kernel (see the module doc)."""
  lib = _kernel()
  print(f"\n{'roi_pool case':34s} {'pass':>7s} {'jaxpool ms':>10s} "
        f"{'kernel ms':>10s} {'ratio':>6s}")
  for shape, k, out in POOL_CASES:
    n, h, w, c = shape
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    boxes = _boxes(n, k, (h, w))
    ct = np.random.default_rng(2).standard_normal(
        (k, out, out, c)).astype(np.float32)

    def both(x, b, ct):
      y, vjp = jax.vjp(lambda x: jaxpool.roi_pool(x, b, out, 1 / 16), x)
      return y, vjp(ct)[0]

    args = (jnp.asarray(x), jnp.asarray(boxes), jnp.asarray(ct))
    forward = jax.jit(lambda x, b: jaxpool.roi_pool(x, b, out, 1 / 16))
    kernel = _kernel_calls(lib, x, boxes, out, ct) if lib else (None, None)
    # (pass, compiled jaxpool call, its arguments, the kernel's call)
    passes = (("fwd", forward.lower(*args[:2]).compile(), args[:2], kernel[0]),
              ("fwd+bwd", jax.jit(both).lower(*args).compile(), args,
               kernel[1]))
    name = f"{shape}, {k} boxes, {out}x{out}"
    if lib:
      y_k, dx_k = kernel[1]()
      y_j, dx_j = passes[1][1](*args)
      err = max(float(np.abs(np.moveaxis(np.asarray(y_j), -1, 1) - y_k).max()),
                float(np.abs(np.moveaxis(np.asarray(dx_j), -1, 1)
                             - dx_k).max()))
      name = f"{name} (max diff {err:.1e})"
    for pass_, compiled, arguments, kernel_call in passes:
      call = functools.partial(
          lambda c, a: jax.block_until_ready(c(*a)), compiled, arguments)
      jax_ms, *kernel_ms = (1e3 * t for t in _interleaved_medians(
          [call] + ([kernel_call] if kernel_call else [])))
      kernel_text, ratio_text = "-", "-"
      if kernel_ms:
        kernel_text = f"{kernel_ms[0]:10.1f}"
        ratio_text = f"{kernel_ms[0] / jax_ms:6.2f}"
      print(f"{name:34s} {pass_:>7s} {jax_ms:10.1f} {kernel_text:>10s} "
            f"{ratio_text:>6s}", flush=True)
      name = ""

if __name__ == "__main__":
  main()
  pool_main()
