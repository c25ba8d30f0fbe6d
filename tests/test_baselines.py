"""Baselines and metrics: hand-computed values, the constant-prediction trap, the physics rule,
descriptor features, and evaluate_all end to end on a tiny dataset written in stage 03's format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from magnb.baselines import (
    DESCRIPTOR_STATS,
    best_cut,
    classification_metrics,
    descriptor_baseline,
    descriptor_feature_names,
    descriptor_features,
    evaluate_all,
    format_table,
    majority_baseline,
    physics_baseline,
    regression_metrics,
    task_for,
)
from magnb.dataset import replace_table
from magnb.errors import MagnbError

# --------------------------------------------------------------------------------------------
# metrics


def test_classification_metrics_match_hand_computation():
    y = [0, 0, 1, 1, 1]
    p = [0.1, 0.6, 0.7, 0.4, 0.9]  # predicted 0, 1, 1, 0, 1
    m = classification_metrics(y, p)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # positive-negative pairs ranked right: 0.7 > both, 0.4 > 0.1 only, 0.9 > both -> 5 of 6
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["n"] == 5
    assert m["class_counts"] == {"0": 2, "1": 3}
    assert m["predicted_counts"] == {"0": 2, "1": 3}
    # two columns of class probabilities say the same thing
    two = classification_metrics(y, np.column_stack([1 - np.array(p), p]))
    assert two["confusion_matrix"] == m["confusion_matrix"]
    assert two["roc_auc"] == pytest.approx(m["roc_auc"])


def test_constant_prediction_on_imbalanced_data_scores_the_majority_rate_but_half_balanced():
    """The seed project's failure mode: 90 % accuracy from predicting one class."""
    y = np.array([0] * 9 + [1])
    m = classification_metrics(y, np.zeros(10))
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[9, 0], [1, 0]]


def test_single_class_truth_gives_no_roc_auc_and_a_note():
    m = classification_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert m["roc_auc"] is None
    assert any("ROC-AUC" in n for n in m["notes"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)  # the recall of the one class
    json.dumps(m, allow_nan=False)


def test_explicit_predictions_and_scores():
    # the score is used for ROC-AUC only, the predictions for the rest
    m = classification_metrics([0, 1, 1], [0.5, 7.0, 3.0], y_pred=[1, 1, 0])
    assert m["confusion_matrix"] == [[0, 1], [1, 1]]
    assert m["roc_auc"] == pytest.approx(1.0)


def test_bad_metric_inputs_are_clear_errors():
    with pytest.raises(MagnbError, match="true labels"):
        classification_metrics([0, 1], [0.5])
    with pytest.raises(MagnbError, match="empty"):
        classification_metrics([], [])
    with pytest.raises(MagnbError, match="NaN"):
        classification_metrics([0, 1], [0.5, math.nan])
    with pytest.raises(MagnbError, match="NaN"):
        regression_metrics([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(MagnbError, match="task"):
        majority_baseline([0, 1], [0, 1], "clustering")


def test_regression_metrics_match_hand_computation():
    m = regression_metrics([1, 2, 3, 4], [1, 2, 3, 5])
    assert m["mae"] == pytest.approx(0.25)
    assert m["rmse"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 1 / 5)  # SS_res 1, SS_tot 2.25 + 0.25 + 0.25 + 2.25
    assert m["n"] == 4
    constant = regression_metrics([2, 2, 2], [2, 2, 3])
    assert constant["r2"] is None and constant["notes"]


# --------------------------------------------------------------------------------------------
# majority and physics


def test_majority_baseline_is_half_balanced_accuracy():
    m = majority_baseline([1] * 8 + [0] * 2, [1] * 7 + [0] * 3, "classification")
    assert m["prediction"] == 1
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(0.5)
    r = majority_baseline([1.0, 2.0, 3.0], [0.0, 4.0], "regression")
    assert r["prediction"] == pytest.approx(2.0)
    assert r["mae"] == pytest.approx(2.0)
    assert r["r2"] == pytest.approx(1 - 8 / 8)


def _order_table(rng: np.random.Generator, n: int, related: bool) -> pd.DataFrame:
    fm = rng.random(n) < 0.6
    n_mag = rng.integers(1, 5, n)
    if related:
        per_atom = np.where(fm, rng.uniform(2.5, 4.0, n), rng.uniform(0.0, 0.3, n))
    else:
        per_atom = rng.uniform(0.0, 4.0, n)
    sign = rng.choice([-1.0, 1.0], n)
    return pd.DataFrame(
        {
            "calc_id": [f"c{i}" for i in range(n)],
            "status": "ok",
            "order": np.where(fm, "FM", "AFM"),
            "n_magnetic": n_mag,
            "moment_integral": sign * per_atom * n_mag,
        }
    )


def test_physics_order_rule_separates_fm_from_afm():
    rng = np.random.default_rng(0)
    train, test = _order_table(rng, 60, True), _order_table(rng, 40, True)
    m = physics_baseline(train, test, "order", threshold=4.0)
    assert m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0 and m["roc_auc"] == 1.0
    assert 0.3 < m["cut"] < 2.5
    assert m["train_balanced_accuracy"] == 1.0


def test_physics_order_rule_is_chance_when_order_is_unrelated_to_the_integral():
    rng = np.random.default_rng(1)
    train, test = _order_table(rng, 400, False), _order_table(rng, 400, False)
    m = physics_baseline(train, test, "order", threshold=4.0)
    assert abs(m["balanced_accuracy"] - 0.5) < 0.1
    assert abs(m["roc_auc"] - 0.5) < 0.1


def test_physics_order_leaves_out_rows_without_an_order():
    rng = np.random.default_rng(2)
    train, test = _order_table(rng, 30, True), _order_table(rng, 20, True)
    test.loc[:4, "order"] = ""
    test.loc[5, "status"] = "skipped"
    m = physics_baseline(train, test, "order", threshold=4.0)
    assert m["n"] == 14


def test_best_cut_is_the_midpoint_of_the_gap():
    cut, ba = best_cut(np.array([0.0, 0.1, 0.2, 2.0, 3.0]), np.array([0, 0, 0, 1, 1]))
    assert cut == pytest.approx(1.1) and ba == 1.0
    assert best_cut(np.array([1.0, 2.0]), np.array([1, 1])) == (None, 1.0)
    # three cuts (0.5, 1.5, 2.5) tie at balanced accuracy 2/3: the middle one is taken
    cut, ba = best_cut(np.array([0.0, 1, 1, 2, 2, 3]), np.array([0, 0, 1, 0, 1, 1]))
    assert cut == pytest.approx(1.5) and ba == pytest.approx(2 / 3)


def test_physics_moment_class_and_regressions_use_the_integral():
    table = pd.DataFrame(
        {
            "calc_id": ["a", "b", "c", "d"],
            "status": "ok",
            "moment_integral": [5.0, -6.0, 3.9, 0.2],
            "moment": [5.2, -6.1, 4.1, 0.0],
            "moment_class": [1, 1, 1, 0],
            "n_magnetic": [2, 3, 0, 1],
            "moment_per_magnetic_atom": [2.6, -6.1 / 3, math.nan, 0.0],
        }
    )
    m = physics_baseline(table, table, "moment_class", threshold=4.0)
    # c: |integral| 3.9 < 4 but |moment| 4.1 > 4 -> the one miss
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert m["probability"][0] > 0.99 and m["probability"][3] < 0.01
    r = physics_baseline(table, table, "moment", threshold=4.0)
    assert r["mae"] == pytest.approx((0.2 + 0.1 + 0.2 + 0.2) / 4)
    with pytest.raises(MagnbError, match="NaN"):  # no magnetic atom: no per-atom label
        physics_baseline(table, table, "moment_per_magnetic_atom", threshold=4.0)
    ok = table[table["n_magnetic"] > 0]
    per = physics_baseline(ok, ok, "moment_per_magnetic_atom", threshold=4.0)
    assert per["mae"] == pytest.approx((0.1 + 0.1 / 3 + 0.2) / 3)
    with pytest.raises(MagnbError, match="physics"):
        physics_baseline(table, table, "colour", threshold=4.0)


# --------------------------------------------------------------------------------------------
# descriptors


def test_descriptor_features_of_hand_made_samples():
    shape = (4, 4, 2)
    voxels = 32
    halves = np.ones(shape)
    halves[:2] = -1.0
    sample = np.stack([np.full(shape, 2.0), halves], axis=-1)  # channel 0 constant, 1 +-1
    skewed = np.zeros((2, 2, 1, 2))
    skewed[1, 1, 0, :] = 3.0  # values 0, 0, 0, 3
    f = descriptor_features(sample[None])
    names = descriptor_feature_names(["m+", "m-"])
    assert f.shape == (1, 2 * len(DESCRIPTOR_STATS)) == (1, len(names))
    got = dict(zip(names, f[0], strict=True))
    expect = {
        "m+:mean": 2.0,
        "m+:std": 0.0,
        "m+:min": 2.0,
        "m+:max": 2.0,
        "m+:mean_abs": 2.0,
        "m+:frac_pos": 1.0,
        "m+:frac_neg": 0.0,
        "m+:q01": 2.0,
        "m+:q50": 2.0,
        "m+:q99": 2.0,
        "m+:skew": 0.0,
        "m+:sum_pos": 2.0 * voxels,
        "m+:sum_neg": 0.0,
        "m-:mean": 0.0,
        "m-:std": 1.0,
        "m-:min": -1.0,
        "m-:max": 1.0,
        "m-:mean_abs": 1.0,
        "m-:frac_pos": 0.5,
        "m-:frac_neg": 0.5,
        "m-:q01": -1.0,
        "m-:q50": 0.0,
        "m-:q99": 1.0,
        "m-:skew": 0.0,
        "m-:sum_pos": voxels / 2,
        "m-:sum_neg": voxels / 2,
    }
    assert got == pytest.approx(expect)
    one = descriptor_features(sample)  # a single (X, Y, Z, C) sample
    np.testing.assert_allclose(one, f)
    s = dict(zip(descriptor_feature_names(2), descriptor_features(skewed)[0], strict=True))
    assert s["c0:skew"] == pytest.approx(2 / math.sqrt(3))  # third moment 2.53125 / 1.6875**1.5
    with pytest.raises(MagnbError):
        descriptor_features(np.zeros((3, 3)))


def _blob_samples(rng: np.random.Generator, amplitude: np.ndarray) -> np.ndarray:
    """(N, 6, 6, 6, 1) noise, plus a 2^3 blob of the given amplitude at a random place."""
    n = len(amplitude)
    x = rng.normal(0.0, 0.1, (n, 6, 6, 6, 1))
    for i in range(n):
        a, b, c = rng.integers(0, 5, 3)
        x[i, a : a + 2, b : b + 2, c : c + 2, 0] += amplitude[i]
    return x.astype(np.float32)


def test_descriptor_baseline_learns_a_blob_and_is_chance_on_noise_labels():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    feats = descriptor_features(_blob_samples(rng, y * 1.0))
    m = descriptor_baseline(feats[:150], y[:150], feats[150:], y[150:], "classification", 0)
    assert m["balanced_accuracy"] > 0.95 and m["roc_auc"] > 0.98
    noise = rng.integers(0, 2, 300)
    m = descriptor_baseline(feats[:150], noise[:150], feats[150:], noise[150:], "classification")
    assert abs(m["balanced_accuracy"] - 0.5) < 0.15
    amp = rng.uniform(0.5, 2.0, 200)
    feats = descriptor_features(_blob_samples(rng, amp))
    r = descriptor_baseline(feats[:100], amp[:100], feats[100:], amp[100:], "regression")
    assert r["r2"] > 0.9


def test_descriptor_baseline_with_one_training_class_predicts_it():
    feats = np.random.default_rng(4).normal(size=(10, 3))
    m = descriptor_baseline(feats[:6], [1] * 6, feats[6:], [0, 1, 1, 1], "classification")
    assert m["predicted_counts"] == {"0": 0, "1": 4}
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert "only class 1" in m["notes"][0]


# --------------------------------------------------------------------------------------------
# end to end


def write_dataset(data_dir: Path, samples: np.ndarray, table: pd.DataFrame, threshold: float):
    """dataset.h5 + table.parquet as stage 03 writes them (the columns the loader reads)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    nchan = samples.shape[-1]
    with h5py.File(data_dir / "dataset.h5", "w") as f:
        f.create_dataset("samples", data=samples.astype(np.float32), chunks=(1, *samples.shape[1:]))
        f.attrs["norm_offset"] = json.dumps([0.1] * nchan)
        f.attrs["norm_scale"] = json.dumps([2.0] * nchan)
        f.attrs["periodic_axes"] = json.dumps([True, True, True])
        f.attrs["config"] = yaml.safe_dump({"threshold": threshold, "channels": ["m+", "m-"]})
        f.attrs["build_id"] = "hand-made"
    replace_table(data_dir, table)  # the table of that build


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, pd.DataFrame]:
    """60 calculations, 70 % FM; FM cells carry a positive blob and a large integral per atom."""
    rng = np.random.default_rng(5)
    n = 60
    fm = rng.random(n) < 0.7
    n_mag = rng.integers(1, 4, n)
    integral = np.where(fm, rng.uniform(2.0, 3.5, n), rng.uniform(-0.2, 0.2, n)) * n_mag
    moment = integral + rng.normal(0.0, 0.05, n)
    m = _blob_samples(rng, np.where(fm, 1.5, 0.0))[..., 0]
    samples = np.stack([np.maximum(m, 0), np.maximum(-m, 0)], axis=-1)
    split = np.array(["train"] * 36 + ["val"] * 6 + ["test"] * 18)
    status = np.array(["ok"] * n, dtype=object)
    status[3] = "skipped"  # a skipped row has no sample
    order = np.where(fm, "FM", "AFM").astype(object)
    order[45] = ""  # a run tag that names no order (a test row)
    n_mag[50] = 0  # no magnetic atom: no per-atom moment
    sample = np.where(status == "ok", np.cumsum(status == "ok") - 1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_atom = np.where(n_mag > 0, moment / n_mag, math.nan)
    table = pd.DataFrame(
        {
            "calc_id": [f"calc{i:02d}" for i in range(n)],
            "formula": [f"F{i // 2}" for i in range(n)],
            "status": status,
            "sample": sample,
            "split": split,
            "order": order,
            "moment": moment,
            "moment_integral": integral,
            "moment_class": (np.abs(moment) > 4.0).astype(int),
            "moment_per_magnetic_atom": per_atom,
            "n_magnetic": n_mag,
        }
    )
    data = tmp_path / "data"
    write_dataset(data, samples[status == "ok"], table, threshold=4.0)
    return data, table


def test_evaluate_all_end_to_end(tiny):
    data, table = tiny
    test_rows = table[(table["split"] == "test") & (table["order"] != "")]
    y_test = (test_rows["order"] == "FM").to_numpy().astype(int)
    model_prob = np.where(y_test == 1, 0.8, 0.3)
    res = evaluate_all(data, "order", model_prob_or_pred=model_prob, batch_size=4)
    assert list(res) == ["model", "majority", "physics", "descriptor"]
    json.dumps(res, allow_nan=False)
    assert res["model"]["balanced_accuracy"] == 1.0
    assert res["majority"]["balanced_accuracy"] == pytest.approx(0.5)
    assert res["majority"]["accuracy"] == pytest.approx(y_test.mean())
    assert res["physics"]["balanced_accuracy"] == 1.0
    assert res["descriptor"]["balanced_accuracy"] > 0.9
    for entry in res.values():
        assert entry["n"] == len(y_test)
        assert entry["n_train"] == 35  # 36 train rows, one skipped
        assert entry["label"] == "order" and entry["task"] == "classification"
    # features are per batch: the batch size changes nothing
    again = evaluate_all(data, "order", batch_size=64)
    assert again["descriptor"] == res["descriptor"]
    assert "model" not in again
    text = format_table(res)
    lines = text.splitlines()
    assert lines[0] == "| method | n | accuracy | balanced accuracy | ROC-AUC |"
    assert lines[2].startswith("| model | 17 | ") and lines[3].startswith("| majority |")
    # a constant prediction is half balanced in every resample that keeps both classes
    assert "| 0.500 [0.50, 0.50] |" in lines[3]
    # 17 test rows, 5 or so of one class: the table warns about its size by itself
    assert any(line.startswith("warning: small test split: n = 17") for line in lines), text
    assert "95 % intervals" in text
    with pytest.raises(MagnbError, match="model outputs"):
        evaluate_all(data, "order", model_prob_or_pred=model_prob[:-1])


def test_evaluate_all_moment_class_reads_the_threshold_and_regressions_drop_nan_labels(tiny):
    data, table = tiny
    res = evaluate_all(data, "moment_class", split="val")
    assert res["physics"]["threshold"] == 4.0
    assert "probability" not in res["physics"]  # per-sample values stay out of metrics.json
    json.dumps(res, allow_nan=False)

    res = evaluate_all(data, "moment", model_prob_or_pred=np.zeros((18, 1)))
    test = table[(table["split"] == "test") & (table["status"] == "ok")]
    assert res["physics"]["mae"] == pytest.approx(
        np.abs(test["moment"] - test["moment_integral"]).mean(), rel=1e-5
    )
    assert res["model"]["mae"] == pytest.approx(np.abs(test["moment"]).mean(), rel=1e-5)
    assert res["physics"]["r2"] > 0.99
    assert "R^2" in format_table(res).splitlines()[0]

    per = evaluate_all(data, "moment_per_magnetic_atom", model_prob_or_pred=np.ones(17))
    assert per["model"]["n"] == 17 == per["physics"]["n"]
    assert "left out 0 training and 1 test rows" in per["physics"]["notes"][0]
    json.dumps(per, allow_nan=False)


def test_task_for_labels():
    assert task_for("order") == task_for("moment_class") == "classification"
    assert task_for("moment") == task_for("moment_per_magnetic_atom") == "regression"
    with pytest.raises(MagnbError, match="label"):
        evaluate_all(Path("/nonexistent"), "colour")


def test_evaluate_all_k_fold_rows_train_on_their_own_rows(tiny):
    # rows=(train, test) are positions among the usable rows (status ok, in table order): the
    # training rows here are mostly AFM, the test rows mostly FM, so a majority, physics cut or
    # descriptor fitted on the wrong rows scores differently
    data, table = tiny
    usable = table[table["status"] == "ok"].reset_index(drop=True)
    has_order = usable["order"] != ""
    afm = np.flatnonzero(has_order & (usable["order"] == "AFM"))
    fm = np.flatnonzero(has_order & (usable["order"] == "FM"))
    train_rows = np.sort(np.concatenate([afm[:-3], fm[:3]]))
    test_rows = np.sort(np.concatenate([afm[-3:], fm[3:13]]))
    res = evaluate_all(data, "order", rows=(train_rows, test_rows), split="fold 0")
    y_train = (usable["order"][train_rows] == "FM").astype(int)
    y_test = (usable["order"][test_rows] == "FM").astype(int).to_numpy()
    assert y_train.mean() < 0.5 < y_test.mean()  # the premise
    majority = res["majority"]
    assert majority["prediction"] == 0 and majority["accuracy"] == pytest.approx(3 / 13)
    for entry in res.values():
        assert entry["n_train"] == len(train_rows) and entry["n"] == 13
        assert entry["split"] == "fold 0"
    # the physics cut: midway between the largest training AFM and smallest training FM |m|/atom
    per_atom = np.abs(usable["moment_integral"] / usable["n_magnetic"])
    tr = per_atom[train_rows].to_numpy()
    cut = (tr[y_train.to_numpy() == 0].max() + tr[y_train.to_numpy() == 1].min()) / 2
    assert res["physics"]["cut"] == pytest.approx(cut)
    # the descriptor is fitted on the training rows and scored on the test rows
    assert res["descriptor"]["n"] == 13
    assert sum(res["descriptor"]["class_counts"].values()) == 13
    assert res["descriptor"]["class_counts"] == {"0": 3, "1": 10}


def test_evaluate_all_regression_majority_is_the_training_mean(tiny):
    data, table = tiny
    res = evaluate_all(data, "moment")
    train = table[(table["split"] == "train") & (table["status"] == "ok")]
    assert res["majority"]["prediction"] == pytest.approx(train["moment"].mean())
    assert res["majority"]["n_train"] == 35


def test_evaluate_all_uses_a_given_threshold_and_needs_none_for_order(tiny, tmp_path):
    data, table = tiny
    given = evaluate_all(data, "moment_class", threshold=2.0)
    assert given["physics"]["threshold"] == 2.0  # not the dataset's 4.0
    assert evaluate_all(data, "moment_class", threshold=0.0)["physics"]["threshold"] == 0.0
    # a dataset that records no threshold still has order baselines
    with h5py.File(data / "dataset.h5", "a") as f:
        f.attrs["config"] = yaml.safe_dump({"channels": ["m+", "m-"]})
    assert evaluate_all(data, "order")["majority"]["prediction"] == 1
    with pytest.raises(MagnbError, match="records no threshold"):
        evaluate_all(data, "moment_class")


def test_evaluate_all_entries_name_their_method_and_keep_their_own_notes(tiny):
    data, table = tiny
    test_rows = table[(table["split"] == "test") & (table["order"] != "")]
    y_test = (test_rows["order"] == "FM").to_numpy().astype(int)
    res = evaluate_all(data, "order", model_prob_or_pred=np.where(y_test == 1, 0.8, 0.3))
    assert res["model"]["method"] == "model"
    # the model is right on every sample: classification_metrics' own note stays in its entry
    assert any(note.startswith("every class's recall is 0 or 1") for note in res["model"]["notes"])
    n_afm, n_fm = int((y_test == 0).sum()), int((y_test == 1).sum())
    assert res["model"]["small_sample_warning"] == (
        f"small test split: n = {n_afm + n_fm} (AFM: {n_afm}, FM: {n_fm}); under 10 samples of "
        "a class the metrics resolve little and a bootstrap of so few samples understates the "
        "intervals"
    )
    test = table[(table["split"] == "test") & (table["status"] == "ok")]
    reg = evaluate_all(data, "moment", model_prob_or_pred=test["moment"].to_numpy() + 0.5)
    assert reg["model"]["method"] == "model" and reg["model"]["mae"] == pytest.approx(0.5)
    with pytest.raises(MagnbError) as err:
        evaluate_all(data, "order", model_prob_or_pred=y_test[:-1])
    assert str(err.value) == (
        f"{len(y_test) - 1} model outputs for {len(y_test)} 'test' samples with a 'order' label "
        "(predict on DensityDataset(split='test', shuffle=False))"
    )
