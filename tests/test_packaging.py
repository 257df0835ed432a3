"""The wheel holds every package of the source tree.

The editable install finds a new subpackage by itself, so a package missing from
pyproject's list would pass every other test here and be absent from the wheel.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[set[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = config["tool"]["setuptools"]
    return set(setuptools["packages"]), dict(setuptools["package-dir"])


def _on_disk(package_dir: dict[str, str]) -> set[str]:
    found: set[str] = set()
    for package, folder in package_dir.items():
        root = ROOT / folder
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            if any(part.startswith((".", "__")) for part in relative):
                continue
            if package == "tideflow" and relative and f"tideflow.{relative[0]}" in package_dir:
                continue  # mapped to its own top-level folder
            found.add(".".join((package, *relative)))
    return found


def test_every_package_is_listed_for_the_wheel() -> None:
    listed, package_dir = _declared()
    missing = sorted(_on_disk(package_dir) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists() -> None:
    listed, package_dir = _declared()
    gone = sorted(listed - _on_disk(package_dir))
    assert not gone, f"listed in pyproject.toml but not in the tree: {gone}"
