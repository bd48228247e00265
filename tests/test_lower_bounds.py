"""The lower bounds pyproject.toml declares are the versions the lower-bound environment tests.

``make test-lower`` (run by CI) installs constraints/lower.txt into .venv-lower and runs the tests
that call transformers' and peft's APIs there; these checks keep the pins and the declared bounds
equal, and, inside that environment, check that the pinned releases are the ones installed."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints" / "lower.txt"


def pinned() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: constraints/lower.txt pins exact releases"
            pins[requirement.name] = specifier.version
    return pins


def declared_lower_bounds() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounds = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        for specifier in requirement.specifier:
            if specifier.operator == ">=":
                bounds[requirement.name] = specifier.version
    return bounds


def test_pins_are_the_declared_lower_bounds():
    pins, bounds = pinned(), declared_lower_bounds()
    assert {"transformers", "peft"} <= set(pins)
    for name, release in pins.items():
        assert name in bounds and Version(bounds[name]) == Version(release), (
            f"constraints/lower.txt tests {name}=={release} but pyproject.toml declares {name}>={bounds.get(name)}")


@pytest.mark.skipif(not os.environ.get("TRAITSPACE_LOWER_BOUNDS"), reason="only inside `make test-lower`")
def test_the_lower_bound_environment_runs_the_pinned_releases():
    for name, release in pinned().items():
        assert Version(version(name)) == Version(release), f"{name} {version(name)} installed, constraints/lower.txt pins {release}"
