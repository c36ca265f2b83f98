"""The version is written once (src/poolwatch/_version.py); the installed metadata follows it."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import tomllib

import poolwatch

ROOT = Path(__file__).resolve().parent.parent


def test_installed_version_is_the_package_version() -> None:
    assert importlib.metadata.version("poolwatch") == poolwatch.__version__


def test_pyproject_does_not_repeat_the_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
