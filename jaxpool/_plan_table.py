"""Plan tables: which lowering each platform gives each class of pooling.

A plan table is plain JSON data, never code. It names the platform it is
for, how it was made (``provenance``: command, device kind, jax version,
date) and an ordered list of rules; each rule gives the lowering of the
forward and of the derivative for the configuration classes it matches::

  {"format": 1, "platform": "cpu",
   "provenance": {"command": "...", "device_kind": "cpu", "jax": "0.10.2",
                  "date": "2026-11-23"},
   "rules": [{"when": {"windows": "blocks", "op": "sum"},
              "forward": "reshape", "derivative": "reshape"}, ...],
   "parameters": {"adaptive_unroll": 16, "adaptive_sliced": 16}}

A configuration class (:func:`config_class`) is the op, the spatial rank,
whether windows tile without overlap, the number of taps, the number of
spatial dims the window spans, dilation, padding, dtype and input size, each
as a short word; a rule's ``when`` names some of them (a word or a list of
words) and matches every class that agrees. The first matching rule whose
lowerings are valid for the configuration wins.

Where tables come from, in the order they are consulted:

1. the user's table for the local device of that platform, written by
   :func:`jaxpool.tune` into the cache directory
   (``$JAXPOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxpool``, else
   ``~/.cache/jaxpool``); one written by another jax version is stale;
2. the table shipped in ``jaxpool/_plans/<platform>.json``;
3. :data:`DEFAULT_RULES`, for platforms without a measured table.

A missing user table is the normal case and is silent; a stale or corrupt
one, or a rule naming an unknown lowering, is ignored with one warning.
Nothing here times anything: ``jaxpool.tune`` does.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import os
import pathlib
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool._spec import WindowSpec

FORMAT = 1
#: The platforms a plan is chosen for; any other gets the default plan.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
FORWARD = ("plain", "slices", "reshape", "separable")
DERIVATIVE = ("taps", "slices", "reshape", "compact")
#: The words of each field of a configuration class, in key order.
FIELDS: dict[str, tuple[str, ...]] = {
    "op": ("max", "min", "sum"),
    "rank": ("1", "2", "3", "4+"),
    "windows": ("blocks", "other"),
    "taps": ("1-4", "5-16", "17-64", "65+"),
    "dims": ("1", "2+"),
    "dilation": ("none", "dilated"),
    "padding": ("none", "padded"),
    "dtype": ("half", "f32", "f64", "int"),
    "size": ("small", "medium", "large"),
}

#: Platforms without a measured table: the plain ``reduce_window`` forward
#: that flax uses, and jaxpool's exact derivative rule (PyTorch's element,
#: no select-and-scatter) over taps of the padded input.
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"when": {}, "forward": "plain", "derivative": "taps"},
)
DEFAULT_PARAMETERS: dict[str, int] = {
    # Bins up to this long pick their element in an unrolled loop.
    "adaptive_unroll": 16,
    # Running maxima of bins up to this long take their taps one by one;
    # longer ones (all, by default) are one reduce_window.
    "adaptive_sliced": 0,
    # Adaptive max whose irregular bins form at most this many runs of
    # equally spaced bins of one length per dim is that many windowed
    # maxima per dim (64 -> 31: three), with their own derivatives.
    "adaptive_segments": 4,
    # roi_pool reads bins from tables of block maxima (a copy of the map
    # per level) while they hold at most 2**this elements, and scans each
    # bin's cells past it.
    "roi_table_log2": 27,
    # roi_pool's cost of one element looked up in its tables, in percent
    # of one element of a table built: it picks the tables' block sizes.
    "roi_lookup_percent": 10,
    # roi_pool's gradient searches its tables for groups of channels whose
    # tables hold at most 2**this elements, and of at least roi_group_min.
    "roi_group_log2": 19,
    "roi_group_min": 16,
    # spatial_pyramid_pool's max levels whose bins are unions of the
    # finest windowed level's bins are pooled from that level's maxima (1;
    # 2: those as one reduce_window, which XLA computes once for every
    # level that reads it) rather than from the input (0).
    "pyramid_nested": 2,
}

_TAP_BOUNDS = ((4, "1-4"), (16, "5-16"), (64, "17-64"))
_SIZE_BOUNDS = ((2**16, "small"), (2**22, "medium"))


@dataclasses.dataclass(frozen=True)
class Rule:
  """One rule of a table: where it applies and the lowerings it gives."""

  when: tuple[tuple[str, frozenset[str]], ...]
  forward: str
  derivative: str
  origin: str = dataclasses.field(default="", compare=False)

  def matches(self, cls: Mapping[str, str]) -> bool:
    return all(cls[field] in words for field, words in self.when)


@dataclasses.dataclass(frozen=True)
class Table:
  """A parsed plan table."""

  platform: str
  provenance: Mapping[str, str]
  rules: tuple[Rule, ...]
  parameters: Mapping[str, int]
  origin: str


def config_class(spec: WindowSpec, op: str, dtype: Any,
                 shape: Sequence[int] | None = None) -> dict[str, str]:
  """The configuration class of a windowed ``op`` over ``spec``.

  Args:
    spec: the resolved window.
    op: ``"max"``, ``"min"`` or ``"sum"``.
    dtype: the input's dtype.
    shape: the input's full shape, for the size class; without it the
      spatial size alone counts.

  Returns:
    one word per field of :data:`FIELDS`.
  """
  dtype = np.dtype(dtype)
  # jnp's test: NumPy does not know bfloat16 as a floating type.
  if not jnp.issubdtype(dtype, jnp.inexact):
    kind = "int"
  elif dtype.itemsize < 4:
    kind = "half"
  else:
    kind = "f32" if dtype.itemsize == 4 else "f64"
  taps = spec.window_size
  elements = math.prod(shape) if shape is not None else math.prod(
      spec.in_shape)
  blocks = spec.strides == spec.window and all(d == 1 for d in spec.dilation)
  return {
      "op": op,
      "rank": str(spec.nspatial) if spec.nspatial < 4 else "4+",
      "windows": "blocks" if blocks else "other",
      "taps": next((w for b, w in _TAP_BOUNDS if taps <= b), "65+"),
      "dims": "2+" if sum(k > 1 for k in spec.window) > 1 else "1",
      "dilation": "dilated" if any(d > 1 for d in spec.dilation) else "none",
      "padding": "padded" if any(
          lo or hi for lo, hi in spec.total_padding) else "none",
      "dtype": kind,
      "size": next((w for b, w in _SIZE_BOUNDS if elements < b), "large"),
  }


def class_key(cls: Mapping[str, str]) -> str:
  """A configuration class as one string, fields in :data:`FIELDS` order."""
  return "|".join(f"{field}={cls[field]}" for field in FIELDS)


# ---------------------------------------------------------------------------
# Parsing: every error is a ValueError saying where.


def _words(field: str, value: Any, where: str) -> frozenset[str]:
  values = [value] if isinstance(value, str) else value
  if not isinstance(values, list) or not values:
    raise ValueError(f"{where}: '{field}' must be a word or a list of words")
  for v in values:
    if v not in FIELDS[field]:
      raise ValueError(f"{where}: '{field}' is one of {FIELDS[field]}, "
                       f"got {v!r}")
  return frozenset(values)


def parse_rule(entry: Any, where: str) -> Rule:
  """A :class:`Rule` from its JSON form; ValueError if it is malformed."""
  if not isinstance(entry, dict) or not isinstance(entry.get("when"), dict):
    raise ValueError(f"{where}: a rule is an object with a 'when' object")
  for field in entry["when"]:
    if field not in FIELDS:
      raise ValueError(f"{where}: unknown field {field!r}")
  when = tuple(sorted((field, _words(field, value, where))
                      for field, value in entry["when"].items()))
  forward = entry.get("forward")
  derivative = entry.get("derivative", "taps")
  if forward not in FORWARD:
    raise ValueError(f"{where}: forward is one of {FORWARD}, got {forward!r}")
  if derivative not in DERIVATIVE:
    raise ValueError(f"{where}: derivative is one of {DERIVATIVE}, got "
                     f"{derivative!r}")
  return Rule(when, forward, derivative, where)


def parse_table(data: Any, origin: str) -> Table:
  """A :class:`Table` from parsed JSON; ValueError if it is malformed."""
  if not isinstance(data, dict) or data.get("format") != FORMAT:
    raise ValueError(f"{origin}: not a plan table of format {FORMAT}")
  platform = data.get("platform")
  if not isinstance(platform, str):
    raise ValueError(f"{origin}: 'platform' must be a string")
  provenance = data.get("provenance", {})
  if not isinstance(provenance, dict):
    raise ValueError(f"{origin}: 'provenance' must be an object")
  rules = data.get("rules")
  if not isinstance(rules, list):
    raise ValueError(f"{origin}: 'rules' must be a list")
  parameters = data.get("parameters", {})
  if not isinstance(parameters, dict) or not all(
      name in DEFAULT_PARAMETERS and isinstance(v, int) and
      not isinstance(v, bool) and 0 <= v <= 4096
      for name, v in parameters.items()):
    raise ValueError(f"{origin}: 'parameters' must map "
                     f"{tuple(DEFAULT_PARAMETERS)} to ints in [0, 4096]")
  return Table(
      platform, {str(k): str(v) for k, v in provenance.items()},
      tuple(parse_rule(r, f"{origin} rule {i}") for i, r in enumerate(rules)),
      dict(parameters), origin)


# ---------------------------------------------------------------------------
# Where tables live.

_warned: set[str] = set()
_lock = threading.Lock()


def warn_once(key: str, message: str) -> None:
  """One ``UserWarning`` per ``key`` per process."""
  with _lock:
    if key in _warned:
      return
    _warned.add(key)
  warnings.warn(message, UserWarning, stacklevel=3)


def cache_dir() -> pathlib.Path:
  """The directory of the user's tuned tables."""
  explicit = os.environ.get("JAXPOOL_CACHE_DIR")
  if explicit:
    return pathlib.Path(explicit).expanduser()
  xdg = os.environ.get("XDG_CACHE_HOME")
  base = pathlib.Path(xdg).expanduser() if xdg else (
      pathlib.Path.home() / ".cache")
  return base / "jaxpool"


def device_slug(device_kind: str) -> str:
  """``device_kind`` as a file-name part: ``NVIDIA H100 80GB`` ->
  ``nvidia-h100-80gb``."""
  return re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-") or "unknown"


def user_table_path(platform: str, device_kind: str) -> pathlib.Path:
  return cache_dir() / f"plan-{platform}-{device_slug(device_kind)}.json"


@functools.cache
def local_device_kind(platform: str) -> str | None:
  """The device kind of this process's first ``platform`` device, if any."""
  try:
    devices = jax.devices(platform)
  except Exception:  # pylint: disable=broad-except
    # No such backend here (e.g. exporting for CUDA from a CPU machine).
    return None
  return devices[0].device_kind if devices else None


def _read(path: pathlib.Path) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


@functools.cache
def shipped_table(platform: str) -> Table | None:
  """The measured table shipped for ``platform``, or None."""
  resource = importlib.resources.files("jaxpool") / "_plans" / (
      f"{platform}.json")
  if not resource.is_file():
    return None
  try:
    return parse_table(json.loads(resource.read_text(encoding="utf-8")),
                       f"jaxpool/_plans/{platform}.json")
  except ValueError as e:
    warn_once(str(resource), f"jaxpool: ignoring the shipped plan table: {e}")
    return None


def load_user_table(path: pathlib.Path, platform: str) -> Table | None:
  """The user's table at ``path`` if present, current and well formed.

  A stale (other jax version) or corrupt table is ignored with one warning.
  """
  if not path.is_file():
    return None
  try:
    table = parse_table(_read(path), str(path))
  except (OSError, ValueError, UnicodeDecodeError) as e:
    warn_once(str(path), f"jaxpool: ignoring the plan table {path}: {e}")
    return None
  made_with = table.provenance.get("jax")
  if made_with != jax.__version__:
    warn_once(str(path), (
        f"jaxpool: ignoring the stale plan table {path}: tuned with jax "
        f"{made_with}, this is jax {jax.__version__}; run "
        f"`python -m jaxpool.tune` again."))
    return None
  if table.platform != platform:
    warn_once(str(path), f"jaxpool: ignoring the plan table {path}: it is "
              f"for {table.platform!r}, not {platform!r}")
    return None
  return table


@functools.cache
def user_table(platform: str) -> Table | None:
  """The user's tuned table for this process's ``platform`` device."""
  kind = local_device_kind(platform)
  if kind is None:
    return None
  return load_user_table(user_table_path(platform, kind), platform)


def tables(platform: str | None,
           include_user: bool = True) -> tuple[Table, ...]:
  """The tables consulted for ``platform``, first to last."""
  if platform not in PLATFORMS:
    return ()
  found = (user_table(platform) if include_user else None,
           shipped_table(platform))
  return tuple(t for t in found if t is not None)


@functools.cache
def _default_rules() -> tuple[Rule, ...]:
  return tuple(parse_rule(r, f"default rule {i}")
               for i, r in enumerate(DEFAULT_RULES))


def rules(platform: str | None,
          include_user: bool = True) -> tuple[Rule, ...]:
  """Every rule for ``platform`` in the order they are tried."""
  return tuple(r for t in tables(platform, include_user)
               for r in t.rules) + _default_rules()


def parameters(platform: str | None) -> dict[str, int]:
  """The tuning parameters for ``platform``: user's over shipped over
  defaults."""
  result = dict(DEFAULT_PARAMETERS)
  for table in reversed(tables(platform)):
    result.update(table.parameters)
  return result


def reload() -> None:
  """Forgets every loaded table, so that the next trace reads them anew."""
  user_table.cache_clear()
  shipped_table.cache_clear()
  local_device_kind.cache_clear()
  with _lock:
    _warned.clear()


def provenance(platform: str) -> dict[str, str] | None:
  """The provenance of the table that decides first for ``platform``."""
  found = tables(platform)
  return dict(found[0].provenance) if found else None
