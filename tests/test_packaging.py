"""pyproject.toml and requirements*.txt name the same dependencies, and the console scripts exist."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SELF = PROJECT["name"]


def requirement_lines(name: str) -> set[str]:
    """The requirements of a requirements file, without comments and `-r` includes, spaces removed."""
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines())
    return {line.replace(" ", "") for line in lines if line and not line.startswith("-")}


def extra(name: str) -> set[str]:
    """An extra's requirements, with the extras it names (`omnigen-studio[train]`) expanded."""
    out = set()
    for req in PROJECT["optional-dependencies"][name]:
        match = re.fullmatch(rf"{re.escape(SELF)}\[(.+)\]", req)
        out |= set().union(*(extra(e) for e in match.group(1).split(","))) if match else {req.replace(" ", "")}
    return out


def test_requirements_txt_is_the_library_with_studio_and_train():
    core = {req.replace(" ", "") for req in PROJECT["dependencies"]}
    assert requirement_lines("requirements.txt") == core | extra("studio") | extra("train")


def test_requirements_test_txt_adds_the_test_tools():
    wanted = extra("test") - extra("studio") - extra("train")
    assert requirement_lines("requirements-test.txt") == wanted
    assert "-r requirements.txt" in (ROOT / "requirements-test.txt").read_text(encoding="utf-8")


def test_console_scripts_name_callables():
    for name, target in PROJECT["scripts"].items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
