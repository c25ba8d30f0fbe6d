"""The config reference is the code's: every key, type, default and meaning in docs/config.md
comes from the dataclasses, `magnb config` prints what a file gives, and every CLI option's help
shows its default."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from magnb.cli import DefaultsHelpFormatter, build_parser
from magnb.config import (
    TrainConfig,
    config_classes,
    effective_yaml,
    field_docs,
    from_mapping,
    load_train_config,
    load_yaml,
    reference_markdown,
)
from magnb.dataset import ScrapeConfig
from tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "config.md"


def test_docs_config_md_is_the_generated_reference():
    assert DOC.read_text() == reference_markdown(), (
        "docs/config.md is stale: regenerate it with `magnb config reference > docs/config.md`"
    )


@pytest.mark.parametrize("name", ["scrape", "train"])
def test_every_key_has_a_type_default_and_meaning(name):
    cls = config_classes()[name]
    docs = field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    undocumented = [k for k, v in docs.items() if not v]
    assert not undocumented, f"fields without a #: comment: {undocumented}"
    rows = _reference_rows(name)
    assert [r["key"] for r in rows] == [f.name for f in dataclasses.fields(cls)]
    for row in rows:
        assert row["type"] and row["meaning"] == docs[row["key"]].replace("|", "\\|")


def _reference_rows(name: str) -> list[dict[str, str]]:
    """The table of section ``name`` in docs/config.md, parsed back."""
    text = DOC.read_text()
    section = text.split(f"## {name}:", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            key, type_, default, meaning = cells
            rows.append(
                {"key": key.strip("`"), "type": type_, "default": default.strip("`"),
                 "meaning": meaning}
            )  # fmt: skip
    return rows


def test_the_documented_defaults_are_what_scrape_without_a_config_uses(tmp_path):
    """Three readings of the defaults agree: the reference's default column, `magnb config
    scrape` with no file, and the ScrapeConfig that `magnb scrape DATA` builds."""
    from magnb.cli import scrape_settings

    documented = {
        r["key"]: json.loads(r["default"])
        for r in _reference_rows("scrape")
        if r["default"] != "(required)"
    }
    data = str(tmp_path / "data")
    from_docs = from_mapping(ScrapeConfig, {**documented, "data_dir": data})
    args = build_parser().parse_args(["scrape", data])
    settings, _ = scrape_settings(args)
    from_cli = from_mapping(ScrapeConfig, settings)
    printed = subprocess.run(
        [sys.executable, "-m", "magnb.cli", "config", "scrape", "--data", data],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    ).stdout  # fmt: skip
    from_print = from_mapping(ScrapeConfig, yaml.safe_load(printed))
    assert from_docs == from_cli == from_print == ScrapeConfig(data_dir=data)
    trained = {r["key"]: json.loads(r["default"]) for r in _reference_rows("train")}
    assert from_mapping(TrainConfig, trained) == TrainConfig()


#: the shipped configs (not the sweep files, which name a base config: slurm/sweep.sbatch)
CONFIGS = [
    p
    for p in sorted((REPO_ROOT / "configs").glob("*.yaml"))
    if not {"sweep", "configs"} & set(load_yaml(p))
]


def test_the_shipped_configs_are_found():
    names = {p.name for p in CONFIGS}
    assert {"default.yaml", "scrape.yaml", "scrape_bulk.yaml"} <= names
    assert "sweep_seed.yaml" not in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_magnb_config_prints_what_each_shipped_file_gives(path, capsys):
    """The printed effective config reads back to the same object, and marks exactly the keys
    the file left out as defaults."""
    from magnb.cli import main

    settings = load_yaml(path)
    if set(settings) <= {f.name for f in dataclasses.fields(TrainConfig)}:
        which, expected = "train", load_train_config(path)
        argv = ["config", "train", "--config", str(path)]
    else:
        which = "scrape"
        expected = from_mapping(ScrapeConfig, {**settings, "data_dir": "D"})
        argv = ["config", "scrape", "--config", str(path), "--data", "D"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    cls = config_classes()[which]
    assert from_mapping(cls, yaml.safe_load(out)) == expected
    for line in out.splitlines()[1:]:
        key = line.split(":", 1)[0]
        marked = "# default" in line
        assert marked == (key not in settings and key != "data_dir"), line


def test_effective_yaml_marks_defaults_and_reads_back():
    config = TrainConfig(epochs=3, label="moment")
    text = effective_yaml(config, {"epochs", "label"})
    assert from_mapping(TrainConfig, yaml.safe_load(text)) == config
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert "# default" not in lines["epochs"] and "# default" in lines["dropout"]
    assert "training epochs" in lines["epochs"]


def _options(parser: argparse.ArgumentParser):
    """(subcommand, action) for every argument of every subcommand, and of magnb itself."""
    yield (
        "magnb",
        parser,
        [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction)],
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub, sub._actions


def test_every_cli_option_help_shows_its_default():
    missing = []
    for name, parser, actions in _options(build_parser()):
        formatter = parser.formatter_class(parser.prog)
        assert isinstance(formatter, DefaultsHelpFormatter), name
        for action in actions:
            if isinstance(action, argparse._HelpAction) or action.required:
                continue
            if not action.option_strings and action.nargs is None:
                continue  # a required positional: no default to show
            text = formatter._get_help_string(action)
            if "default" not in text:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options whose help shows no default: {missing}"
    out = subprocess.run(
        [sys.executable, "-m", "magnb.cli", "split", "--help"],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    ).stdout  # fmt: skip
    assert "(default: 0)" in " ".join(out.split())
