"""Tables, JSON and the bar chart of a benchmark run."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from bench import suite

_SHORT_DTYPE = {"float32": "f32", "bfloat16": "bf16"}


def _speedup(value: float | None) -> str:
  return "-" if value is None else f"{value:.2g}x" if value < 10 else (
      f"{value:.0f}x")


def _impl_cell(row: dict, impl: str) -> str:
  """``ms [speed-up over flax|over torch]``, or why there is no figure."""
  ms = row.get(f"{impl}_ms")
  if ms is None:
    return f"n/a ({row.get(f'{impl}_error', 'skipped')})"
  ratios = [_speedup(row.get(f"{impl}_vs_{ref}")) if ref != impl else "-"
            for ref in ("flax", "torch")]
  return f"{ms:.3g} [{ratios[0]}|{ratios[1]}]"


def _compile_cell(row: dict) -> str:
  cells = []
  for impl in ("jaxpool", "flax"):
    s = row.get(f"{impl}_compile_s")
    cells.append("-" if s is None else f"{s:.2f}")
  return "/".join(cells)


COLUMNS = ("case", "pass", "dtype", "jaxpool", "flax", "equinox", "torch",
           "torch fmt", "floor", "jaxpool/floor", "GB/s (% copy|% peak)",
           "compile s (jaxpool/flax)")


def add_bandwidth(row: dict, copy_gbps: float, peak_gbps: float | None
                  ) -> None:
  """jaxpool's achieved bandwidth as fractions of the copy's and the peak."""
  achieved = row.get("jaxpool_gbps")
  if achieved:
    row["jaxpool_frac_of_copy"] = achieved / copy_gbps
    if peak_gbps:
      row["jaxpool_frac_of_peak"] = achieved / peak_gbps


def _bandwidth_cell(row: dict) -> str:
  achieved = row.get("jaxpool_gbps")
  if not achieved:
    return "-"
  fracs = [row.get(k) for k in ("jaxpool_frac_of_copy",
                                "jaxpool_frac_of_peak")]
  return f"{achieved:.3g} (" + "|".join(
      "-" if f is None else f"{100 * f:.0f}%" for f in fracs) + ")"


def table(rows: Sequence[dict]) -> str:
  """The main table: times in ms, speed-ups over flax and PyTorch."""
  lines = []
  for row in rows:
    lines.append([
        row["case"], row["pass"], _SHORT_DTYPE.get(row["dtype"], row["dtype"]),
        _impl_cell(row, "jaxpool"), _impl_cell(row, "flax"),
        _impl_cell(row, "equinox"), _impl_cell(row, "torch"),
        {"channels_last": "CL"}.get(row.get("torch_layout"),
                                    row.get("torch_layout", "-")),
        f"{row['floor_ms']:.3g}" if row.get("floor_ms") else "-",
        f"{row['jaxpool_over_floor']:.1f}" if row.get(
            "jaxpool_over_floor") else "-",
        _bandwidth_cell(row),
        _compile_cell(row)])
  return _aligned(COLUMNS, lines)


def _aligned(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
  widths = [max(len(str(c)) for c in column)
            for column in zip(header, *lines)]
  fmt = lambda cells: " | ".join(
      str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
  rule = "-+-".join("-" * w for w in widths)
  return "\n".join([fmt(header), rule] + [fmt(line) for line in lines])


def legend() -> str:
  return (
      "Times are medians in ms. [a|b]: speed-up over flax | over PyTorch "
      "(their time / this time; >1 is faster). flax: flax.linen "
      "(plain reduce_window), or the plain JAX named in the JSON "
      "(flax_note) where flax has no such op. torch fmt: the faster "
      "PyTorch memory format (CL: channels-last). floor: input and output "
      "bytes at the speed of one full read of the input, measured in this "
      "run; jaxpool/floor: how many floors jaxpool takes. GB/s: jaxpool's "
      "bytes moved per second, as % of a copy (x + 1) measured in this run "
      "and of the device's datasheet peak where known. compile: "
      "jax.jit(...).lower(x).compile() seconds.")


def _format_value(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.3g}"
  return str(value)


def generic_table(rows: Sequence[dict]) -> str:
  """A table of arbitrary dict rows, columns in order of first appearance."""
  columns: list[str] = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  return _aligned(columns, [[_format_value(row.get(c)) for c in columns]
                            for row in rows])


def write_json(path: str, meta: dict, rows: Sequence[dict],
               sections: dict[str, Any]) -> None:
  with open(path, "w") as f:
    json.dump({"meta": meta, "rows": list(rows), "sections": sections}, f,
              indent=1, default=str)


def plot(path: str, rows: Sequence[dict], title: str) -> None:
  """Bar chart of each implementation's speed-up over flax, log scale."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  dtypes = [d for d in suite.DTYPES if any(r["dtype"] == d for r in rows)]
  fig, axes = plt.subplots(
      len(suite.PASSES), max(len(dtypes), 1), squeeze=False,
      figsize=(7 * max(len(dtypes), 1), 4.5 * len(suite.PASSES)))
  series = ("jaxpool", "equinox", "torch", "floor")
  for i, direction in enumerate(suite.PASSES):
    for j, dtype in enumerate(dtypes):
      ax = axes[i][j]
      subset = [r for r in rows if r["pass"] == direction and
                r["dtype"] == dtype]
      width = 0.8 / len(series)
      for k, impl in enumerate(series):
        values = [r.get(f"{impl}_vs_flax") or math.nan for r in subset]
        ax.bar([x + k * width for x in range(len(subset))], values, width,
               label=impl)
      ax.axhline(1.0, color="black", linewidth=0.8)
      ax.set_yscale("log")
      ax.set_xticks([x + 0.4 - width / 2 for x in range(len(subset))])
      ax.set_xticklabels([r["case"] for r in subset], rotation=60,
                         ha="right", fontsize=7)
      ax.set_ylabel("speed-up over flax (log)")
      ax.set_title(f"{direction}, {dtype}")
      ax.legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
