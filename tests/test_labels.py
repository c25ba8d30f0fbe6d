"""Labels from run tags: FM/AFM order and the spin pattern (FM, Neel, zigzag, stripe), their
encoding for the models, and the four-order demo data end to end through stages 01-03."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magnb.baselines import physics_baseline, task_for
from magnb.dataset import (
    LABEL_CLASSES,
    LABELS,
    encode_labels,
    label_rows,
    order_from_run,
    order_pattern_from_run,
)
from magnb.errors import MagnbError


@pytest.mark.parametrize(
    ("run", "order", "pattern"),
    [
        ("FM", "FM", "FM"),
        ("ferro_U4", "FM", "FM"),
        ("AFM", "AFM", ""),  # antiparallel, but which arrangement is not said
        ("AFM-Neel", "AFM", "Neel"),
        ("afm_neel", "AFM", "Neel"),
        ("neel", "AFM", "Neel"),
        ("AFM-zigzag", "AFM", "zigzag"),
        ("zig-zag", "AFM", "zigzag"),
        ("afm_stripe2", "AFM", "stripe"),
        ("stripe", "AFM", "stripe"),
        ("spin_so", "", ""),
        ("", "", ""),
    ],
)
def test_order_and_pattern_from_run_tags(run: str, order: str, pattern: str) -> None:
    assert order_from_run(run) == order
    assert order_pattern_from_run(run) == pattern


def test_encoding_and_rows_follow_label_classes() -> None:
    assert LABEL_CLASSES["order_pattern"] == ("FM", "Neel", "zigzag", "stripe")
    assert set(LABEL_CLASSES) | {"moment", "moment_per_magnetic_atom"} == set(LABELS)
    assert all(task_for(k) == "classification" for k in LABEL_CLASSES)
    codes = encode_labels(["stripe", "FM", "zigzag", "Neel"], "order_pattern")
    assert codes.tolist() == [3, 0, 2, 1] and codes.dtype == np.int32
    assert encode_labels(["AFM", "FM"], "order").tolist() == [0, 1]
    table = pd.DataFrame(
        {
            "status": ["ok", "ok", "ok", "skipped", "ok"],
            "sample": [0, 1, 2, -1, 3],
            "order": ["FM", "AFM", "AFM", "AFM", ""],
            "order_pattern": ["FM", "", "zigzag", "Neel", ""],
        }
    )
    assert label_rows(table, "order_pattern").index.tolist() == [0, 2]
    assert label_rows(table, "order").index.tolist() == [0, 1, 2]
    with pytest.raises(MagnbError, match="no 'order_pattern' column"):
        label_rows(table.drop(columns="order_pattern"), "order_pattern")


def _pattern_table(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """FM cells with a large integral; Neel, zigzag and stripe cells alike with a small one."""
    pattern = rng.choice(["FM", "Neel", "zigzag", "stripe"], n, p=[0.25, 0.35, 0.2, 0.2])
    n_mag = rng.integers(2, 5, n)
    per_atom = np.where(pattern == "FM", rng.uniform(2.5, 4.0, n), rng.uniform(0.0, 0.3, n))
    return pd.DataFrame(
        {
            "calc_id": [f"c{i}" for i in range(n)],
            "status": "ok",
            "order": np.where(pattern == "FM", "FM", "AFM"),
            "order_pattern": pattern,
            "n_magnetic": n_mag,
            "moment_integral": per_atom * n_mag,
        }
    )


def test_physics_order_pattern_finds_fm_and_guesses_the_common_afm_pattern() -> None:
    rng = np.random.default_rng(3)
    train, test = _pattern_table(rng, 200), _pattern_table(rng, 200)
    m = physics_baseline(train, test, "order_pattern", threshold=4.0)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (4, 4)
    neel = LABEL_CLASSES["order_pattern"].index("Neel")
    assert cm[0, 0] == cm[0].sum()  # every FM cell found
    assert cm[1:, neel].sum() == cm[1:].sum()  # every other cell called the commonest: Neel
    # FM and Neel right, zigzag and stripe wrong: balanced accuracy 2 / 4
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert "Neel" in m["method"]


# --------------------------------------------------------------------------------------------
# the demo's four-order data through stages 01-03


@pytest.fixture(scope="module")
def pattern_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from magnb.collect import CollectConfig, collect
    from magnb.dataset import ScrapeConfig, scrape
    from magnb.split import SplitConfig, split_all
    from magnb.synth import SynthConfig, write_demo_tree

    root = tmp_path_factory.mktemp("patterns")
    config = SynthConfig(**{**SynthConfig.demo(6).__dict__, "grid": (12, 20, 48)})
    write_demo_tree(root / "vasp", config, progress=False)
    data = root / "data"
    collect(CollectConfig(source=root / "vasp", data_dir=data, progress=False))
    split_all(SplitConfig(data_dir=data, progress=False, workers=1))
    scrape(
        ScrapeConfig(
            data_dir=data,
            grid=(12, 20, 12),
            slab_window=12.0,
            stratify="order_pattern",
            fractions=(0.5, 0.25, 0.25),
            kfold=0,
            workers=1,
            progress=False,
        )  # fmt: skip
    )
    return data


def test_every_sample_carries_the_pattern_of_its_own_run(pattern_data: Path) -> None:
    """The loader's label for each sample is the pattern in that calculation's folder name, and
    the sample's magnetization is that calculation's (up and down moments where its A sites
    are): the labels are not shuffled against the densities."""
    from magnb.dataset import DensityDataset, read_table

    table = read_table(pattern_data)
    assert sorted(table["order_pattern"].unique()) == ["FM", "Neel", "stripe", "zigzag"]
    for split in ("train", "val", "test"):
        ds = DensityDataset(pattern_data, split=split, label="order_pattern", shuffle=False)
        # by hand from the folder names synth wrote (the loader's documented 0 = FM, 1 = Neel,
        # 2 = zigzag, 3 = stripe), not through the tag parser and encoder under test
        by_hand = {"FM": 0, "AFM-Neel": 1, "AFM-zigzag": 2, "AFM-stripe": 3}
        assert ds.labels.tolist() == [by_hand[run] for run in ds.table["run"]]
        x = np.concatenate([ds[i][0] for i in range(len(ds))])
        # FM samples have (almost) no negative magnetization, the antiparallel ones as much as
        # positive
        neg_share = x[..., 1].sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3, 4))
        fm = ds.labels == 0
        assert np.all(neg_share[fm] < 0.2) and np.all(neg_share[~fm] > 0.25)


def test_splits_are_grouped_and_hold_every_pattern(pattern_data: Path) -> None:
    from magnb.dataset import read_table

    table = read_table(pattern_data)
    by_split = table.groupby("split")["formula"].apply(set)
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    counts = table.groupby(["split", "order_pattern"]).size().unstack(fill_value=0)
    assert (counts > 0).all().all()  # each formula brings all four patterns to its split


def test_evaluate_all_scores_four_classes(pattern_data: Path) -> None:
    from magnb.baselines import evaluate_all

    results = evaluate_all(pattern_data, "order_pattern")
    for name in ("majority", "physics", "descriptor"):
        assert np.array(results[name]["confusion_matrix"]).shape == (4, 4), name
    assert results["majority"]["balanced_accuracy"] == pytest.approx(0.25)
    # the integral finds FM and nothing more: at most FM plus one antiparallel pattern right
    assert results["physics"]["balanced_accuracy"] <= 0.5 + 1e-9


@pytest.mark.slow
def test_training_on_the_pattern_has_four_outputs_and_scores_them(
    pattern_data: Path, tmp_path: Path
) -> None:
    import keras

    from magnb.config import TrainConfig, from_mapping
    from magnb.train import train

    config = from_mapping(
        TrainConfig,
        {
            "dataset_dir": str(pattern_data), "runs_dir": str(tmp_path / "runs"),
            "label": "order_pattern", "filters": [4], "kernel_size": [9], "pool": [2],
            "dense": [8], "epochs": 2, "batch_size": 4,
        },
    )  # fmt: skip
    result = train(config, progress=False)
    test = result.metrics["test"]
    assert result.metrics["task"] == "classification"
    for name in ("model", "majority", "physics", "descriptor"):
        assert np.array(test[name]["confusion_matrix"]).shape == (4, 4), name
        assert test[name]["n"] == test["model"]["n"]
    model = keras.saving.load_model(result.run_dir / "model.keras", safe_mode=True)
    assert model.output_shape == (None, 4)


def test_pattern_label_on_tags_without_a_pattern_says_what_to_fix(tmp_path: Path) -> None:
    """A tree whose AFM runs are tagged plain 'AFM' has no order_pattern to learn: the error
    says the run tags must name the pattern, before anything is trained."""
    from magnb.config import TrainConfig, from_mapping
    from magnb.train import preflight
    from tests.conftest import build_demo_data

    data = build_demo_data(tmp_path, 4)  # hexagonal FM/AFM tree: AFM names no pattern
    config = from_mapping(
        TrainConfig,
        {"dataset_dir": str(data), "runs_dir": str(tmp_path / "runs"), "label": "order_pattern"},
    )
    with pytest.raises(MagnbError, match="must name the spin pattern"):
        preflight(config)
    assert not (tmp_path / "runs").exists()
