"""torchvision beside a CPU build of torch, and NumPy forms of its CPU kernels.

The registries serve torchvision 0.28.0 only as a wheel built for CUDA
torch; beside ``torch==2.13.0+cpu`` its C++ extension does not load, and the
import fails registering fake kernels for ``nms`` and ``qnms``, which were
never defined. Defining their schemas first makes it succeed (only done when
the plain import fails). ``torchvision.ops.roi_align`` then runs its
pure-PyTorch implementation, the reference its C++ kernel is tested against;
``roi_pool``, ``ps_roi_pool`` and ``ps_roi_align`` have no such fallback, so
this module carries NumPy transcriptions of their CPU kernels
(``torchvision/csrc/ops/cpu/*_kernel.cpp``): float32 arithmetic, and
``std::round``'s halves away from zero. See
``/work/shared/notes/torchvision-on-cpu-torch.md``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

try:
  import torchvision.ops as ops  # noqa: F401
except RuntimeError:
  _LIB = torch.library.Library("torchvision", "DEF")  # Kept alive.
  for _op in ("nms", "qnms"):
    _LIB.define(f"{_op}(Tensor dets, Tensor scores, float iou_threshold) "
                "-> Tensor")
  import torchvision.ops as ops  # noqa: F401

import torchvision  # noqa: E402

# roi_align's fallback is wrapped in torch.compile, which takes a minute per
# shape here: run it eagerly.
torch._dynamo.config.disable = True

HAS_OPS = torchvision.extension._has_ops()
f32 = np.float32


def _round(v) -> int:
  return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def roi_pool(x: np.ndarray, rois: np.ndarray, ph: int, pw: int,
             scale: float) -> tuple[np.ndarray, np.ndarray]:
  """roi_pool_kernel.cpp: values and argmax (-1: none), NCHW in."""
  n, c, h, w = x.shape
  out = np.zeros((len(rois), c, ph, pw), f32)
  arg = np.full((len(rois), c, ph, pw), -1, np.int64)
  for k, roi in enumerate(rois.astype(f32)):
    b = int(roi[0])
    sw, sh, ew, eh = (_round(f32(v) * f32(scale)) for v in roi[1:])
    rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
    bh, bw = f32(rh) / f32(ph), f32(rw) / f32(pw)
    for i in range(ph):
      for j in range(pw):
        hs = min(max(int(math.floor(f32(i) * bh)) + sh, 0), h)
        he = min(max(int(math.ceil(f32(i + 1) * bh)) + sh, 0), h)
        ws = min(max(int(math.floor(f32(j) * bw)) + sw, 0), w)
        we = min(max(int(math.ceil(f32(j + 1) * bw)) + sw, 0), w)
        if he <= hs or we <= ws:
          continue
        for ch in range(c):
          best, at = -np.finfo(f32).max, -1
          for yy in range(hs, he):
            for xx in range(ws, we):
              if x[b, ch, yy, xx] > best:
                best, at = x[b, ch, yy, xx], yy * w + xx
          out[k, ch, i, j], arg[k, ch, i, j] = best, at
  return out, arg


def roi_pool_grad(x_shape, rois, arg, grad) -> np.ndarray:
  """roi_pool_kernel.cpp's backward: each output's gradient to its argmax."""
  n, c, h, w = x_shape
  out = np.zeros((n, c, h * w), np.float64)
  for k in range(len(rois)):
    b = int(rois[k, 0])
    for ch in range(c):
      for a, g in zip(arg[k, ch].ravel(), grad[k, ch].ravel()):
        if a >= 0:
          out[b, ch, a] += g
  return out.reshape(x_shape)


def ps_roi_pool(x: np.ndarray, rois: np.ndarray, ph: int, pw: int,
                scale: float) -> np.ndarray:
  """ps_roi_pool_kernel.cpp's forward (bins clipped to ``size - 1``)."""
  n, c, h, w = x.shape
  co = c // (ph * pw)
  out = np.zeros((len(rois), co, ph, pw), f32)
  for k, roi in enumerate(rois.astype(f32)):
    b = int(roi[0])
    sw, sh, ew, eh = (_round(f32(v) * f32(scale)) for v in roi[1:])
    rw, rh = max(ew - sw, 1), max(eh - sh, 1)
    bh, bw = f32(rh) / f32(ph), f32(rw) / f32(pw)
    for c_out in range(co):
      for i in range(ph):
        for j in range(pw):
          c_in = (c_out * ph + i) * pw + j
          hs = min(max(int(math.floor(f32(i) * bh)) + sh, 0), h - 1)
          he = min(max(int(math.ceil(f32(i + 1) * bh)) + sh, 0), h - 1)
          ws = min(max(int(math.floor(f32(j) * bw)) + sw, 0), w - 1)
          we = min(max(int(math.ceil(f32(j + 1) * bw)) + sw, 0), w - 1)
          if he <= hs or we <= ws:
            continue
          region = x[b, c_in, hs:he, ws:we].astype(f32)
          out[k, c_out, i, j] = region.sum(dtype=f32) / f32(region.size)
  return out


def _bilinear(plane: np.ndarray, y, x):
  h, w = plane.shape
  if not (y >= -1.0 and y <= h and x >= -1.0 and x <= w):
    return f32(0)
  y, x = max(y, f32(0)), max(x, f32(0))
  yl, xl = int(y), int(x)
  if yl >= h - 1:
    yh = yl = h - 1
    y = f32(yl)
  else:
    yh = yl + 1
  if xl >= w - 1:
    xh = xl = w - 1
    x = f32(xl)
  else:
    xh = xl + 1
  ly, lx = f32(y - yl), f32(x - xl)
  hy, hx = f32(1) - ly, f32(1) - lx
  return (hy * hx * plane[yl, xl] + hy * lx * plane[yl, xh]
          + ly * hx * plane[yh, xl] + ly * lx * plane[yh, xh])


def roi_align(x: np.ndarray, rois: np.ndarray, ph: int, pw: int,
              scale: float, sampling_ratio: int, aligned: bool,
              position_sensitive: bool = False) -> np.ndarray:
  """roi_align_kernel.cpp (and ps_roi_align_kernel.cpp's forward, with
  ``position_sensitive``; its empty adaptive grid gives 0 here, not 0/0)."""
  n, c, h, w = x.shape
  co = c // (ph * pw) if position_sensitive else c
  out = np.zeros((len(rois), co, ph, pw), f32)
  offset = f32(0.5) if aligned or position_sensitive else f32(0)
  for k, roi in enumerate(rois.astype(f32)):
    b = int(roi[0])
    sw, sh, ew, eh = (f32(v) * f32(scale) - offset for v in roi[1:])
    rw, rh = f32(ew - sw), f32(eh - sh)
    if not (aligned or position_sensitive):
      rw, rh = max(rw, f32(1)), max(rh, f32(1))
    bh, bw = f32(rh / f32(ph)), f32(rw / f32(pw))
    gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / ph))
    gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / pw))
    count = max(gh * gw, 1)
    for i in range(ph):
      for j in range(pw):
        for ch in range(co):
          c_in = (ch * ph + i) * pw + j if position_sensitive else ch
          total = f32(0)
          for iy in range(gh):
            yy = sh + f32(i) * bh + f32(iy + 0.5) * bh / f32(gh)
            for ix in range(gw):
              xx = sw + f32(j) * bw + f32(ix + 0.5) * bw / f32(gw)
              total += _bilinear(x[b, c_in], f32(yy), f32(xx))
          out[k, ch, i, j] = total / f32(count)
  return out
