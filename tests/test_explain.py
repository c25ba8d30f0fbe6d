"""magnb.explain: integrated gradients and their completeness, aggregation per atom and region
in real (periodic, sheared) cells, occlusion, filter responses, kernel smoothness; the ground
truth on the demo's spin-pattern task against a shuffled-label control (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from magnb import explain
from magnb.explain import REGIONS, InputSpace, SampleStructure
from tests.conftest import REPO_ROOT


def toy_classifier(shape=(8, 8, 8, 2), seed=0):
    """A small periodic-conv softmax classifier with seeded weights (the same on every
    backend)."""
    import keras

    from magnb.layers import PeriodicConv3D

    inputs = keras.Input(shape=shape)
    x = PeriodicConv3D(3, 3, activation="tanh", name="periodic_conv_1")(inputs)
    x = keras.layers.GlobalAveragePooling3D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def structure(cell, frac, species, shape=(20, 20, 20), periodic=(True, True, True), shells=()):
    frac = np.asarray(frac, dtype=float)
    return SampleStructure(
        frac=frac,
        species=list(species),
        magnetic=np.array([explain.magnetic_species(s) for s in species]),
        cell=np.asarray(cell, dtype=float),
        shape=shape,
        periodic=periodic,
        shells=tuple(shells),
    )


# --------------------------------------------------------------------------------------------
# integrated gradients


def test_integrated_gradients_are_complete():
    """sum(attribution) = p(x) - p(baseline) for the target probability, up to a small residual
    that is reported (and shrinks with more steps)."""
    model = toy_classifier()
    x = np.random.default_rng(1).normal(0, 2, (8, 8, 8, 2)).astype("float32")
    p = np.asarray(model(np.stack([x, np.zeros_like(x)])))[:, 0]
    assert abs(p[0] - p[1]) > 0.05  # a change worth attributing
    attr, residual = explain.integrated_gradients(model, x, 0, steps=64)
    assert attr.shape == x.shape
    assert residual == pytest.approx(attr.sum() - (p[0] - p[1]), abs=1e-5)
    assert abs(residual) < 0.01 * abs(p[0] - p[1])
    _, coarse = explain.integrated_gradients(model, x, 0, steps=2)
    assert abs(coarse) > abs(residual)


def test_attribution_of_a_linear_model_is_input_times_weight():
    import keras

    inputs = keras.Input(shape=(4, 4, 4, 2))
    outputs = keras.layers.Dense(1, use_bias=True)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(2)
    w = rng.normal(size=(128, 1)).astype("float32")
    model.set_weights([w, np.array([0.7], dtype="float32")])
    x = rng.normal(size=(4, 4, 4, 2)).astype("float32")
    attr, residual = explain.integrated_gradients(model, x, 0, steps=3)
    np.testing.assert_allclose(attr, x * w[:, 0].reshape(4, 4, 4, 2), rtol=1e-5, atol=1e-6)
    assert abs(residual) < 1e-4


# --------------------------------------------------------------------------------------------
# aggregation in the real cell


def test_atom_aggregation_wraps_around_the_cell():
    """A voxel at the far edge of the grid belongs to the atom just across the boundary."""
    s = structure(np.eye(3) * 10.0, [[0.02, 0.5, 0.5], [0.6, 0.5, 0.5]], ["Cr", "Te"])
    attr = np.zeros((20, 20, 20, 1), dtype=np.float32)
    attr[19, 10, 10, 0] = 2.0  # x = 9.5 A: 0.7 A from the Cr at 0.2 A through the boundary
    attr[12, 10, 10, 0] = -1.0  # x = 6.0 A: on the Te
    table = explain.atom_table(s, attr)
    assert table["attribution"].tolist() == pytest.approx([2.0, -1.0])
    assert table["abs_share"].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_nearest_atom_uses_cartesian_distance_in_a_sheared_cell():
    """In a sheared cell the nearest atom by fractional coordinates is not the nearest in
    space: the voxel at frac (0.5, 0.5, 0) (Cartesian (9.5, 1.5, 0)) is 1.90 A from atom 0 at
    frac (0.5, 0.3, 0) but 0.95 A from atom 1 at frac (0.2, 0.8, 0)."""
    cell = [[10.0, 0, 0], [9.0, 3.0, 0], [0, 0, 10.0]]
    s = structure(cell, [[0.5, 0.3, 0.0], [0.2, 0.8, 0.0]], ["Fe", "Fe"])
    owner = explain.nearest_atom(s).reshape(s.shape)
    assert owner[10, 10, 0] == 1
    # and everywhere, against brute force over images -6..6 (ties may go either way)
    grid = s.voxel_cartesian()
    dist = np.full((2, len(grid)), np.inf)
    for a, f in enumerate(s.frac):
        for img in np.ndindex(13, 13, 3):
            shift = np.array(img) - (6, 6, 1)
            dist[a] = np.minimum(dist[a], np.linalg.norm(grid - (f + shift) @ s.cell, axis=1))
    got = explain.nearest_atom(s)
    np.testing.assert_allclose(dist[got, np.arange(len(grid))], dist.min(axis=0), atol=1e-9)


def test_region_of_a_pair_across_the_boundary():
    """Two Cr 1 A apart through the cell boundary: the voxels between them (across the
    boundary) are their shell-1 path, the direct segment the other way round is not."""
    s = structure(np.eye(3) * 10.0, [[0.05, 0.5, 0.5], [0.95, 0.5, 0.5]], ["Cr", "Cr"],
                  shells=(1.0,))  # fmt: skip
    pairs = explain.magnetic_pairs(s)
    assert [(p.i, p.j, p.image, p.shell) for p in pairs] == [(0, 1, (-1, 0, 0), 1)]
    labels = explain.region_labels(s, site_radius=0.3, path_radius=0.3)
    assert REGIONS[labels[0, 10, 10]] == "A-A shell 1"  # x = 0: the middle of the pair
    assert REGIONS[labels[1, 10, 10]] == "A site"  # x = 0.5 A: on the first Cr
    assert REGIONS[labels[10, 10, 10]] == "rest"  # x = 5 A: the wrong way round
    # a sphere on the cell's face takes voxels from both sides of it
    near = explain.voxels_near_segment(s, np.array([0, 0.5, 0.5]), np.array([0, 0.5, 0.5]), 0.6)
    rows = set(np.unravel_index(near, s.shape)[0].tolist())
    assert rows == {19, 0, 1}
    table = explain.region_summary(np.ones((20, 20, 20, 1)), labels)
    assert table["ig_share"].sum() == pytest.approx(1.0)
    assert table.set_index("region").loc["A-A shell 1", "ig"] >= 1


def test_neighbour_shells_of_a_honeycomb_from_pymatgen():
    """The honeycomb of the demo's A sites: shells at a/sqrt(3), a, 2a/sqrt(3)."""
    a = 6.0
    lattice = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, 20.0]]
    shells = explain.neighbour_shells(lattice, ["Cr", "Cr", "Te"],
                                      [[1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5], [0, 0, 0.6]])  # fmt: skip
    assert shells == pytest.approx((a / np.sqrt(3), a, 2 * a / np.sqrt(3)), abs=1e-6)


# --------------------------------------------------------------------------------------------
# occlusion


def site_reader(shape, voxels):
    """A two-class softmax whose logit is the m+ channel summed over ``voxels`` (one site)."""
    import keras

    inputs = keras.Input(shape=shape)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    w = np.zeros((int(np.prod(shape)), 2), dtype="float32")
    mask = np.zeros(shape, dtype="float32")
    for v in voxels:
        mask[(*v, 0)] = 1.0
    w[:, 0] = mask.ravel()
    model.set_weights([w, np.zeros(2, dtype="float32")])
    return model


def test_occlusion_changes_only_the_site_a_model_reads():
    shape = (10, 10, 10, 2)
    s = structure(np.eye(3) * 5.0, [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], ["Mn", "Mn"],
                  shape=shape[:3], shells=(4.33,))  # fmt: skip
    x = np.zeros(shape, dtype="float32")
    for site in ((0, 0, 0), (5, 5, 5)):
        x[(*site, 0)] = 1.0  # m+ on both sites
    model = site_reader(shape, [(0, 0, 0)])
    space = InputSpace(("m+", "m-"), np.zeros(2, "float32"), np.ones(2, "float32"))
    table = explain.occlusion_table(model, x, s, 0, space, radius=0.6, ligands=False)
    effect = table[table["kind"] == "site"].set_index("i")["effect"]
    p0 = 1 / (1 + np.exp(-1.0))  # softmax([1, 0])[0]
    assert effect[0] == pytest.approx(0.5 - p0, abs=1e-6)  # its m+ moved to m-: logit 0
    assert effect[1] == pytest.approx(0.0, abs=1e-7)
    flipped = explain.site_occluded(x, s, [0], space, radius=0.6)
    assert flipped[0, 0, 0].tolist() == [0.0, 1.0] and flipped[5, 5, 5].tolist() == [1.0, 0.0]


def test_occlusion_flips_in_raw_units_and_renormalizes():
    s = structure(np.eye(3) * 5.0, [[0.0, 0.0, 0.0]], ["Mn"], shape=(10, 10, 10))
    space = InputSpace(("m+", "m-"), np.zeros(2, "float32"), np.array([2.0, 0.5], "float32"))
    x = np.zeros((10, 10, 10, 2), dtype="float32")
    x[0, 0, 0] = [1.0, 0.0]  # raw m+ = 2
    out = explain.site_occluded(x, s, [0], space, radius=0.3)
    assert out[0, 0, 0].tolist() == pytest.approx([0.0, 4.0])  # raw m- = 2, over 0.5


# --------------------------------------------------------------------------------------------
# backends


def explain_toy() -> dict:
    """Integrated gradients and occlusion of the seeded toy classifier, as plain numbers."""
    model = toy_classifier()
    x = np.random.default_rng(1).normal(0, 2, (8, 8, 8, 2)).astype("float32")
    attr, residual = explain.integrated_gradients(model, x, 0, steps=16)
    s = structure(np.eye(3) * 4.0, [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], ["Mn", "Mn"],
                  shape=(8, 8, 8), shells=(2 * 3**0.5,))  # fmt: skip
    space = InputSpace(("m+", "m-"), np.zeros(2, "float32"), np.ones(2, "float32"))
    occ = explain.occlusion_table(model, x, s, 0, space, radius=1.0, ligands=False)
    return {"sum": float(attr.sum()), "first": attr.ravel()[:5].tolist(),
            "residual": residual, "effects": occ["effect"].tolist()}  # fmt: skip


JAX_SCRIPT = f"""
import json, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests.test_explain import explain_toy
print(json.dumps(explain_toy()))
"""


@pytest.mark.slow
def test_explain_runs_alike_on_tensorflow_and_jax():
    """The same numbers on JAX (a subprocess: the backend is fixed when Keras starts) as on
    TensorFlow (this process)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jax_out = json.loads(done.stdout.strip().splitlines()[-1])
    import keras

    assert keras.backend.backend() == "tensorflow"
    tf_out = explain_toy()
    assert abs(tf_out["residual"]) < 0.01 and abs(jax_out["residual"]) < 0.01
    assert jax_out["sum"] == pytest.approx(tf_out["sum"], rel=1e-3, abs=1e-6)
    np.testing.assert_allclose(jax_out["first"], tf_out["first"], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(jax_out["effects"], tf_out["effects"], rtol=1e-3, atol=1e-6)
    assert len(tf_out["effects"]) == 3  # two sites and their pair


# --------------------------------------------------------------------------------------------
# filters and smoothness


def test_kernel_smoothness_scale():
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(9, 9, 9, 2, 4))
    g = np.exp(-0.5 * (np.arange(9) - 4.0) ** 2 / 2.0**2)
    smooth = np.einsum("i,j,k->ijk", g, g, g)[..., None, None] * np.ones((1, 1, 1, 2, 4))
    assert 0.75 < explain.kernel_smoothness(noise) < 1.05
    assert explain.kernel_smoothness(smooth) < 0.02
    assert explain.kernel_smoothness(np.ones((5, 5, 5, 1, 1))) == 0.0
    assert explain.kernel_smoothness(10 * noise) == pytest.approx(explain.kernel_smoothness(noise))


def test_laplacian_regularizer_is_the_smoothness_number_times_strength():
    from magnb.layers import LaplacianSmoothness

    w = np.random.default_rng(4).normal(size=(7, 7, 7, 2, 3)).astype("float32")
    value = float(np.asarray(LaplacianSmoothness(0.5)(w)))
    assert value == pytest.approx(0.5 * explain.kernel_smoothness(w), rel=1e-4)


def test_kernel_smoothness_config_is_checked_and_keeps_old_run_ids():
    from magnb.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="kernel_smoothness"):
        TrainConfig(kernel_smoothness=-1.0)
    assert TrainConfig(kernel_smoothness=0.0).run_id_for("x") == TrainConfig().run_id_for("x")
    assert TrainConfig(kernel_smoothness=0.1).run_id_for("x") != TrainConfig().run_id_for("x")


def test_pair_response_interaction_vanishes_beyond_the_filter():
    """A 3-voxel filter (1.5 A here) sees two moments 2.5 A apart one at a time: their relative
    orientation changes nothing (interaction 0); at 0.5 A it does."""
    import keras

    from magnb.layers import PeriodicConv3D

    shape = (10, 10, 10, 2)
    inputs = keras.Input(shape=shape)
    out = PeriodicConv3D(2, 3, activation="relu", name="periodic_conv_1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(out)))
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    r = np.linspace(0, 0.6, 20)
    template = pd.DataFrame({"r": r, "density": np.exp(-(r**2) / 0.1)})
    space = InputSpace(("m+", "m-"), np.zeros(2, "float32"), np.ones(2, "float32"))
    far = structure(np.eye(3) * 5.0, [[0.25, 0.5, 0.5], [0.75, 0.5, 0.5]], ["Cr", "Cr"],
                    shape=shape[:3], shells=(2.5,))  # fmt: skip
    near = structure(np.eye(3) * 5.0, [[0.45, 0.5, 0.5], [0.55, 0.5, 0.5]], ["Cr", "Cr"],
                     shape=shape[:3], shells=(0.5,))  # fmt: skip
    r_far = explain.pair_responses(model, far, space, template)
    r_near = explain.pair_responses(model, near, space, template)
    assert np.abs(r_far["interaction"]).max() < 1e-5
    assert np.abs(r_near["interaction"]).max() > 1e-3
    shells = explain.distinguished_shells(r_near)
    assert shells["distinguishes"].tolist() == ["shell 1", "shell 1"]


def test_onsite_template_without_a_dataset_is_a_unit_gaussian():
    t = explain.onsite_template(None, r_max=3.0, bins=300)
    assert t.attrs["source"].startswith("gaussian")
    dr = t["r"].iloc[1] - t["r"].iloc[0]
    assert (4 * np.pi * t["r"] ** 2 * t["density"]).sum() * dr == pytest.approx(1.0, rel=1e-3)


def test_filter_profiles_are_in_angstrom_along_each_axis():
    """A filter whose only weight sits 2 taps along c, in a cell of 0.25 A voxels along a and b
    and 1 A along c: its radial energy is all at 2 A, its polar angle 0 (along c)."""
    import keras

    from magnb.layers import PeriodicConv3D

    inputs = keras.Input(shape=(8, 8, 8, 1))
    model = keras.Model(inputs, PeriodicConv3D(1, 5, name="periodic_conv_1")(inputs))
    kernel = np.zeros((5, 5, 5, 1, 1), dtype="float32")
    kernel[2, 2, 4, 0, 0] = 1.0
    model.get_layer("periodic_conv_1").kernel.assign(kernel)
    s = structure(np.diag([2.0, 2.0, 8.0]), [[0, 0, 0]], ["Cr"], shape=(8, 8, 8))
    p = explain.filter_profiles(model, s, bins=4)
    radial = p[p["kind"] == "radial"].set_index("bin")["value"]
    assert radial.sum() == pytest.approx(1.0)
    peak = radial.idxmax()
    width = radial.index[1] - radial.index[0]
    assert abs(peak - 2.0) <= width / 2 + 1e-9 and radial.max() == pytest.approx(1.0)
    polar = p[p["kind"] == "polar"].set_index("bin")["value"]
    assert polar.idxmax() < 45 and polar.max() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# ground truth on the demo's spin-pattern task


def pattern_dataset(root: Path, n_compounds: int = 12) -> Path:
    """The demo's four spin patterns in the rectangular cell, coarse (12 x 20 x 12 samples,
    about 0.55 A per voxel in the plane), as tests/test_labels.py builds them."""
    from magnb.collect import CollectConfig, collect
    from magnb.dataset import ScrapeConfig, scrape
    from magnb.split import SplitConfig, split_all
    from magnb.synth import SynthConfig, write_demo_tree

    config = SynthConfig(**{**SynthConfig.demo(n_compounds).__dict__, "grid": (12, 20, 48)})
    write_demo_tree(root / "vasp", config, progress=False)
    data = root / "data"
    collect(CollectConfig(source=root / "vasp", data_dir=data, progress=False))
    split_all(SplitConfig(data_dir=data, progress=False, workers=1))
    scrape(ScrapeConfig(data_dir=data, grid=(12, 20, 12), slab_window=12.0,
                        normalization="maxabs", stratify="order_pattern",
                        fractions=(0.5, 0.25, 0.25), kfold=0, workers=1, progress=False))  # fmt: skip
    return data


def shuffled_copy(data: Path, out: Path) -> Path:
    import shutil

    from magnb.store import read_table, replace_table

    shutil.copytree(data, out)
    table = read_table(out)
    table["order_pattern"] = np.random.default_rng(0).permutation(table["order_pattern"])
    replace_table(out, table)
    return out


def train_pattern(data: Path, runs: Path) -> Path:
    from magnb.config import TrainConfig, from_mapping
    from magnb.train import train

    config = from_mapping(
        TrainConfig,
        {"dataset_dir": str(data), "runs_dir": str(runs), "label": "order_pattern",
         "filters": [8], "kernel_size": [9], "pool": [2], "dense": [16], "dropout": 0.0,
         "epochs": 40, "batch_size": 4, "learning_rate": 3e-3, "workers": 1},
    )  # fmt: skip
    return train(config, progress=False).run_dir


@pytest.mark.slow
def test_ground_truth_first_neighbour_pairs_against_a_shuffled_control(tmp_path):
    """A model trained on the spin patterns rests on the relative orientation of first-neighbour
    A pairs: flipping one partner of a first-neighbour pair changes what flipping the other does
    (the pair interaction of :func:`occlusion_table`) by more than 0.05 in probability for most
    test samples; a model trained on shuffled labels shows no such dependence.

    What does not hold, and why (measured here, 12 test samples; the report gives the
    numbers): (1) "the largest share on shell 1" by integrated gradients holds for every sample
    of both models: IG is zero where the input is (no magnetization), so it lies on the sites
    and their tails, and the shell-1 paths hold the tails: a property of the geometry, not of
    the model. (2) By pair interactions shell 1 is the largest for a minority of samples: the
    demo's patterns also differ in their second shell (Neel: all six second neighbours
    parallel; zigzag and stripe: four of six antiparallel), and the trained model uses it as
    much. The check below is the one that separates the two models.
    """
    data = pattern_dataset(tmp_path / "demo")
    control = shuffled_copy(data, tmp_path / "shuffled")
    tables = {}
    for name, d in (("trained", data), ("shuffled", control)):
        run = train_pattern(d, tmp_path / f"runs-{name}")
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 < metrics["kernel_laplacian_energy"] < 2
        tables[name] = explain.shell_table(run, dataset_dir=data, split="test", steps=16)
        if name == "trained":
            responses = explain.filter_pair_responses(run)
            assert responses.attrs["template"] == "dataset"
            assert set(responses["shell"]) == {1, 2, 3}
            assert len(explain.distinguished_shells(responses)) == 8  # one row per filter
            # one sample's attribution per atom, as notebook 05 draws it: the atoms partition it
            first_id = tables[name]["calc_id"].iloc[0]
            one = explain.sample_attribution(run, first_id)
            assert one.atoms["attribution"].sum() == pytest.approx(one.attribution.sum(), rel=1e-5)
            row = tables[name].query("calc_id == @first_id").iloc[0]
            assert one.probability == pytest.approx(row["probability"], rel=1e-5)
    from magnb.train import list_runs

    assert "kernel_laplacian_energy" in list_runs(tmp_path / "runs-trained").columns
    shells = ["A-A shell 1", "A-A shell 2", "A-A shell 3"]
    report = {}
    for name, table in tables.items():
        assert table["residual"].abs().max() < 0.02
        first = table[table["region"] == "A-A shell 1"].set_index("calc_id")["occlusion"]
        report[name] = {
            "samples": len(first),
            "shell1_interaction_over_0.05": float((first > 0.05).mean()),
            "ig_largest_shell1": float(
                (explain.dominant_region(table, "ig_share", shells) == "A-A shell 1").mean()
            ),
            "occlusion_largest_shell1": float(
                (
                    explain.dominant_region(table.fillna(-1), "occlusion_share", shells)
                    == "A-A shell 1"
                ).mean()
            ),  # fmt: skip
        }
    print(json.dumps(report))
    assert report["trained"]["shell1_interaction_over_0.05"] >= 0.75, report
    assert report["shuffled"]["shell1_interaction_over_0.05"] <= 0.25, report
