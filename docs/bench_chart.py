"""Draws the benchmark page's chart from the table on that page.

The table in ``docs/benchmarks.md`` is one measured run of
``python3 -m bench``; this turns its rows back into the bench's row format
and draws them with ``bench.report.plot`` (speed-up over ``flax.linen``, log
scale), so that the chart shows exactly the figures in the table::

  python3 docs/bench_chart.py    # writes docs/_static/bench-cpu.png
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from bench import report  # pylint: disable=wrong-import-position

_DTYPES = {"f32": "float32", "bf16": "bfloat16"}


def _ms(cell: str) -> float | None:
  return None if cell.strip() in ("-", "") else float(cell)


def rows_from_table(text: str) -> list[dict]:
  """The rows of the page's main table (its header starts ``| case |``)."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith("| case | pass"))
  rows = []
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.strip("|").split("|")]
    case, direction, dtype = cells[:3]
    jaxpool, flax, torch, floor = (_ms(c) for c in cells[3:7])
    row = {"case": case, "pass": direction, "dtype": _DTYPES[dtype]}
    for impl, ms in (("jaxpool", jaxpool), ("torch", torch),
                     ("floor", floor)):
      row[f"{impl}_vs_flax"] = flax / ms if flax and ms else None
    rows.append(row)
  return rows


def main() -> None:
  rows = rows_from_table((DOCS / "benchmarks.md").read_text())
  out = DOCS / "_static" / "bench-cpu.png"
  out.parent.mkdir(exist_ok=True)
  report.plot(str(out), rows, "jaxpool, PyTorch and the floor vs flax.linen "
              "(2 shared x86-64 cores, no GPU)")
  print(f"wrote {out} ({len(rows)} rows)")


if __name__ == "__main__":
  main()
