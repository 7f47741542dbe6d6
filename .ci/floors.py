"""Prints ``name==floor`` for every ``>=`` floor that jaxpool declares.

Reads ``pyproject.toml``: the dependencies and the extras named on the
command line (default ``equinox``). ``.ci/run`` installs exactly these
versions into a second virtual environment to prove that the floors are true;
``--check`` then asserts that the running Python imports exactly them.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import sys
import tomllib

_FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([^,;\s]+)\s*$")


def floors(extras: list[str]) -> list[str]:
  project = tomllib.loads(
      (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
  )["project"]
  requirements = list(project["dependencies"])
  for extra in extras:
    requirements += project["optional-dependencies"][extra]
  pins = []
  for requirement in requirements:
    match = _FLOOR.match(requirement)
    if match is None:
      raise SystemExit(f"not a plain '>=' floor: {requirement!r}")
    pins.append(f"{match[1]}=={match[2]}")
  return pins


def check(pins: list[str]) -> None:
  """Exits with a message unless every ``name==version`` is installed."""
  for pin in pins:
    name, floor = pin.split("==")
    found = importlib.metadata.version(name)
    print(f"{name} {found}")
    if found != floor:
      raise SystemExit(f"{name} {found} is installed, not its floor {floor}")


if __name__ == "__main__":
  arguments = sys.argv[1:]
  checking = "--check" in arguments
  pins = floors([a for a in arguments if a != "--check"] or ["equinox"])
  if checking:
    check(pins)
  else:
    print("\n".join(pins))
