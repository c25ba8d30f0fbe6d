"""The run id covers the config and the dataset's identity (its input hash), and a run folder
that holds another dataset's run says what changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import yaml

from magnb.config import TrainConfig, dataset_identity, from_mapping
from magnb.train import describe_dataset_change
from tests.conftest import REPO_ROOT


def fake_dataset(folder: Path, input_hash: str) -> Path:
    """A dataset.h5 holding only the attribute the run id reads."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "dataset.h5", "w") as f:
        f.attrs["input_hash"] = input_hash
    return folder


def config(dataset: Path, **kw) -> TrainConfig:
    return from_mapping(TrainConfig, {"dataset_dir": str(dataset), **kw})


def test_the_same_config_on_two_datasets_gets_two_run_ids(tmp_path):
    a = fake_dataset(tmp_path / "a", "a" * 64)
    b = fake_dataset(tmp_path / "b", "b" * 64)
    copy_of_a = fake_dataset(tmp_path / "copy", "a" * 64)
    none = tmp_path / "not_built"
    ids = {name: config(d).run_id for name, d in (("a", a), ("b", b), ("copy", copy_of_a))}
    assert ids["a"] != ids["b"]
    assert ids["a"] == ids["copy"], "a copy of a dataset is the same dataset"
    assert config(none).run_id not in ids.values()
    assert config(none).run_id == config(tmp_path / "elsewhere").run_id
    assert dataset_identity(a) == "a" * 64 and dataset_identity(none) is None
    # paths, workers and force still do not change the run; the settings do
    assert config(a, runs_dir="elsewhere", workers=3, force=True).run_id == ids["a"]
    assert config(a, seed=1).run_id != ids["a"]
    assert all(i.startswith("default-") and len(i) == len("default-") + 10 for i in ids.values())


def test_rebuilding_a_dataset_in_place_changes_the_run_id(tmp_path):
    data = fake_dataset(tmp_path / "data", "1" * 64)
    before = config(data).run_id
    fake_dataset(data, "2" * 64)
    assert config(data).run_id != before


def test_magnb_run_id_prints_the_id_and_says_when_there_is_no_dataset(tmp_path):
    data = fake_dataset(tmp_path / "data", "c" * 64)
    cfg = tmp_path / "c.yaml"
    for dataset, note in ((data, False), (tmp_path / "missing", True)):
        cfg.write_text(yaml.safe_dump({"dataset_dir": str(dataset), "name": "x"}))
        done = subprocess.run(
            [sys.executable, "-m", "magnb.cli", "run-id", str(cfg)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == config(dataset, name="x").run_id
        assert ("no dataset in" in done.stderr) is note, done.stderr


def _record(settings: dict, calcs: dict, input_hash: str = "h") -> dict:
    return {"input_hash": input_hash, "settings": settings, "calcs": calcs}


def test_describe_dataset_change_names_settings_and_calculations():
    old = _record(
        {"grid": [32, 32, 32], "threshold": 4.0, "seed": 0}, {"a": "1", "b": "2", "c": "3"}
    )
    new = _record(
        {"grid": [16, 16, 16], "threshold": 4.0, "seed": 0}, {"a": "1", "b": "9", "d": "4"}
    )
    text = describe_dataset_change(old, new)
    assert "scrape settings changed: grid [32, 32, 32] -> [16, 16, 16]" in text
    assert "threshold" not in text and "seed" not in text
    assert "1 calculation(s) added (d)" in text
    assert "1 calculation(s) removed (c)" in text
    assert "1 calculation(s) with changed inputs (b)" in text
    many = _record({}, {f"c{i:02d}": "x" for i in range(7)})
    assert "7 calculation(s) added (c00, c01, c02 and 4 more)" in describe_dataset_change(
        _record({}, {}), many
    )


def test_describe_dataset_change_without_details_gives_the_hashes():
    text = describe_dataset_change({"input_hash": "a" * 64}, _record({}, {}, "b" * 64))
    assert "input hash aaaaaaaaaaaa -> bbbbbbbbbbbb" in text
    same = _record({"seed": 0}, {"a": "1"}, "1" * 64)
    other_format = _record({"seed": 0}, {"a": "1"}, "2" * 64)
    assert "another dataset format" in describe_dataset_change(same, other_format)
