"""The two ways to install magnb name the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import REPO_ROOT

CONDA_NAMES = {"python-kaleido": "kaleido"}  # conda-forge name -> PyPI name


def _name(spec: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(?:==?)\s*([^\s;]+)", spec.strip())
    assert m, f"not a pinned requirement: {spec!r}"
    return m.group(1).lower().replace("_", "-"), m.group(2)


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_name(s) for s in project["dependencies"])
    wanted.update(dict(_name(s) for s in project["optional-dependencies"]["cpu"]))
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    found: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            found.update(dict(_name(s) for s in dep["pip"]))
        elif not dep.startswith(("python", "pip")) or dep.startswith("python-"):
            name, pinned = _name(dep)
            found[CONDA_NAMES.get(name, name)] = pinned
    assert found == wanted


def test_every_dependency_is_pinned():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        s for extra in project["optional-dependencies"].values() for s in extra
    ]
    for spec in specs:
        assert "==" in spec, f"{spec} is not pinned"
