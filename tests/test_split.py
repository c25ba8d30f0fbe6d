"""Stage 02: densities in physical units, bad input as failure rows, atomic and resumable."""

from __future__ import annotations

import gzip
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from magnb.collect import CollectConfig, collect
from magnb.split import SplitConfig, load_split, split_all
from magnb.vasp import read_chgcar
from tests.conftest import REPO_ROOT, make_fixture_tree, tree_hashes


def collect_and_split(source: Path, data: Path, **kw):
    collect(CollectConfig(source=source, data_dir=data, progress=False))
    return split_all(SplitConfig(data_dir=data, progress=False, **kw))


@pytest.fixture
def tree(tmp_path, vasp_dir):
    return make_fixture_tree(tmp_path / "calcs", vasp_dir)


def test_split_fixture_tree(tree, tmp_path):
    result = collect_and_split(tree, tmp_path / "data", workers=2)
    idx = result.index.set_index("calc_id")
    assert (idx["status"] == "ok").all(), result.summary()
    assert idx.loc["NO__polarized", "moment"] == pytest.approx(1.0)
    assert idx.loc["NO__polarized", "moment_integral"] == pytest.approx(1.0, abs=1e-3)
    assert idx.loc["NO__polarized", "moment_source"] == "OUTCAR"
    assert not idx["moment_flag"].any()
    assert idx.loc["NO__unpolarized", "spin_kind"] == "none"
    assert idx.loc["Fe__spin", "moment_integral"] == pytest.approx(2.2725, abs=1e-3)
    # magnetic sites: by element without a site table (Fe: 1, NO: 0), by |m| >= 0.5 with one (Si)
    assert list(idx.loc[["Fe__spin", "NO__polarized", "Si__static"], "n_magnetic"]) == [1, 0, 0]
    assert idx.loc["NO__polarized", "source_path"] == str((tree / "NO/polarized").resolve())

    s = load_split(tmp_path / "data/split/NO__polarized.h5")
    ref = read_chgcar(tree / "NO/polarized/CHGCAR")
    np.testing.assert_allclose(s["magnetization"], ref.magnetization, rtol=1e-6, atol=1e-9)
    assert s["total"].dtype == np.float32
    a = s["attrs"]
    assert a["volume"] == pytest.approx(24.0)
    m = s["magnetization"].astype(np.float64)
    assert m.sum() * a["volume"] / m.size == pytest.approx(a["moment_integral"], abs=1e-5)
    assert s["species"] == ["N", "O"]
    np.testing.assert_allclose(s["lattice"], np.diag([2.0, 3.0, 4.0]))
    with h5py.File(tmp_path / "data/split/NO__polarized.h5") as f:
        assert f["total"].attrs["units"] == "e/A^3"
        assert f["magnetization"].attrs["units"] == "muB/A^3"
    nio = load_split(tmp_path / "data/split/NiO__soc.h5")
    assert {"mx", "my", "mz"} <= set(nio) and "magnetization" not in nio
    si = load_split(tmp_path / "data/split/Si__static.h5")
    np.testing.assert_allclose(si["site_moments"], [0.0, 0.0])


def test_rerun_skips_unchanged_and_export(tree, tmp_path):
    data = tmp_path / "data"
    first = collect_and_split(tree, data, workers=1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (data / "split").glob("*.h5")}
    second = split_all(SplitConfig(data_dir=data, progress=False, workers=1))
    assert second.counts["unchanged"] == 8 and second.counts["written"] == 0
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (data / "split").glob("*.h5")}
    pd.testing.assert_frame_equal(first.index, second.index)
    third = split_all(SplitConfig(data_dir=data, progress=False, workers=1, export_chgcar=True))
    assert third.counts["written"] == 8
    exported = read_chgcar(data / "split/Fe__spin.mag.vasp")
    assert exported.electrons == pytest.approx(2.2725, abs=1e-3)  # one block: m as "total"


def _bad_corpus(root: Path, vasp: Path) -> dict[str, str]:
    """Broken calculations built from the real fixtures -> the text their error must contain."""
    no = vasp / "nitric_oxide/polarized"
    lines = (no / "CHGCAR").read_text().splitlines(keepends=True)

    def calc(name: str, chgcar_lines=None, chgcar_bytes=None, companions=True):
        d = root / name / "run"
        d.mkdir(parents=True)
        if chgcar_lines is not None:
            (d / "CHGCAR").write_text("".join(chgcar_lines))
        if chgcar_bytes is not None:
            (d / "CHGCAR.gz").write_bytes(chgcar_bytes)
        if companions:
            for f in ("OUTCAR", "OSZICAR"):
                shutil.copyfile(no / f, d / f)
        return d

    calc("Empty", chgcar_lines=[])
    calc("CutHeader", chgcar_lines=lines[:4])
    calc("CutPositions", chgcar_lines=lines[:9])
    calc("CutGrid1", chgcar_lines=lines[:5000])
    calc("CutAug", chgcar_lines=lines[:19677])
    calc("CutGrid2", chgcar_lines=lines[:30000])
    between = next(
        i for i, x in enumerate(lines) if x.strip() == "0.100000000000E+01  0.100000000000E+01"
    )
    calc("CutBetween", chgcar_lines=lines[:between])
    nan = list(lines)
    nan[200] = nan[200].replace("E", "x", 1)
    calc("NonNumber", chgcar_lines=nan)
    dims = list(lines)
    dims[11] = "   32   48   65\n"
    calc("WrongDims", chgcar_lines=dims)
    gz = bytearray(gzip.compress("".join(lines).encode()))
    gz[len(gz) // 2 : len(gz) // 2 + 100] = b"\xff" * 100
    calc("BadGzip", chgcar_bytes=bytes(gz))
    d = calc("NoMagOutcar", chgcar_lines=lines)
    out = (no / "OUTCAR").read_text().splitlines()
    (d / "OUTCAR").write_text("\n".join(x for x in out if "magnetization" not in x))
    d = calc("AtomCount", companions=False)
    shutil.copyfile(vasp / "fe_bcc/CHGCAR_spin", d / "CHGCAR")
    shutil.copyfile(no / "OUTCAR", d / "OUTCAR")
    d = root / "NoChgcar" / "run"
    d.mkdir(parents=True)
    shutil.copyfile(no / "OUTCAR", d / "OUTCAR")
    return {
        "Empty__run": "Empty/run/CHGCAR: file is empty",
        "CutHeader__run": "CutHeader/run/CHGCAR",
        "CutPositions__run": "CutPositions/run/CHGCAR",
        "CutGrid1__run": "CutGrid1/run/CHGCAR:5000: truncated inside grid block 1",
        "CutAug__run": "CutAug/run/CHGCAR:19677: truncated inside the augmentation occupancies",
        "CutGrid2__run": "CutGrid2/run/CHGCAR:30000: truncated inside grid block 2",
        "CutBetween__run": "CutBetween/run/CHGCAR: has one grid block but the run is spin-polarized",
        "NonNumber__run": "NonNumber/run/CHGCAR:201: non-numeric value",
        "WrongDims__run": "WrongDims/run/CHGCAR",
        "BadGzip__run": "BadGzip/run/CHGCAR.gz",
        "NoMagOutcar__run": "NoMagOutcar/run/OUTCAR: spin-polarized (ISPIN = 2) but no 'magnetization'",
        "AtomCount__run": "AtomCount/run/CHGCAR: has 1 atoms but OUTCAR reports 2",
        "NoChgcar__run": "NoChgcar/run: no file matching 'CHGCAR*'",
    }


def test_bad_input_corpus_gives_one_failure_row_each(tree, tmp_path, vasp_dir):
    expected = _bad_corpus(tree, vasp_dir)
    before = tree_hashes(tree)
    result = collect_and_split(tree, tmp_path / "data", workers=2)
    idx = result.index.set_index("calc_id")
    failed = idx[idx["status"] == "failed"]["error"].to_dict()
    assert set(failed) == set(expected), result.summary()
    for calc_id, text in expected.items():
        assert text in failed[calc_id], (calc_id, failed[calc_id])
        assert "\n" not in failed[calc_id]
    # the good calculations went through all the same
    assert (idx.drop(index=list(expected))["status"] == "ok").all()
    # nothing half-written: no split file for a failure, no temporaries
    split_dir = tmp_path / "data/split"
    for calc_id in expected:
        assert not (split_dir / f"{calc_id}.h5").exists()
    # the lock files stay
    assert sorted(p.name for p in split_dir.glob(".*")) == [".split.lock", ".writers.lock"]
    assert tree_hashes(tree) == before
    summary = result.summary()
    assert summary.count("FAILED") == len(expected)


def _h5_content(path: Path) -> dict:
    with h5py.File(path) as f:
        out = {k: f[k][()].tobytes() for k in f}
        out.update({f"attr:{k}": repr(v) for k, v in f.attrs.items()})
    return out


@pytest.mark.slow
def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, vasp_dir):
    src = tmp_path / "calcs"
    for i in range(8):
        shutil.copytree(vasp_dir / "si_static", src / f"Si{i}" / "static")
        shutil.copytree(vasp_dir / "nitric_oxide/polarized", src / f"NO{i}" / "polarized")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    collect_and_split(src, clean, workers=1)
    collect(CollectConfig(source=src, data_dir=killed, progress=False))
    cmd = [sys.executable, "-m", "magnb.cli", "split", str(killed), "--workers", "1"]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "split").glob("*.h5"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "split").glob("*.h5")))
    assert 0 < done < 16, "the split must be killed part-way for this test to mean anything"
    assert not (killed / "split/index.parquet").exists()
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, capture_output=True)
    names = sorted(p.name for p in (clean / "split").iterdir())
    assert names == sorted(p.name for p in (killed / "split").iterdir())
    for name in names:
        if name.endswith(".h5"):
            assert _h5_content(clean / "split" / name) == _h5_content(killed / "split" / name)
    a = pd.read_parquet(clean / "split/index.parquet").drop(columns="path")
    b = pd.read_parquet(killed / "split/index.parquet").drop(columns="path")
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------------------------------
# a non-collinear run: mx, my, mz stored, the moment and its check on the z component

AXIS = (0.36, -0.48, 0.8)  # distinct, non-zero components: one read for another shows


@pytest.mark.parametrize(("shift", "flagged"), [(0.0, False), (0.5, True)])
def test_noncollinear_split_keeps_mx_my_mz_and_checks_the_z_moment(tmp_path, shift, flagged):
    import dataclasses

    from magnb.split import split_one
    from magnb.store import channel_arrays
    from magnb.synth import make_calculation, write_calculation

    calc = make_calculation("Cr2Ge2Te6", "FM", grid=(8, 8, 32), seed=4, spin_axis=AXIS)
    # the OUTCAR and OSZICAR report (moment + shift) along the axis; the CHGCAR integrates to
    # the original: the flag must compare z with z
    raw = write_calculation(tmp_path / "raw", dataclasses.replace(calc, moment=calc.moment + shift))
    out = tmp_path / "x.h5"
    meta = {"calc_id": "x", "input_hash": "h"}
    row = split_one(raw, "CHGCAR", out, SplitConfig(data_dir=tmp_path), meta)
    split = load_split(out)
    attrs = split["attrs"]
    assert attrs["spin_kind"] == "noncollinear" and "magnetization" not in split
    for k, name in enumerate(("mx", "my", "mz")):
        np.testing.assert_allclose(split[name], AXIS[k] * calc.magnetization, rtol=1e-6, atol=1e-7)
    assert float(attrs["moment"]) == pytest.approx(0.8 * (calc.moment + shift), abs=1e-6)
    assert float(attrs["moment_integral"]) == pytest.approx(0.8 * calc.moment, abs=1e-6)
    assert attrs["moment_source"] == "OUTCAR"
    assert bool(attrs["moment_flag"]) is flagged and row["moment_flag"] is flagged
    assert split["site_moments"] == pytest.approx(0.8 * calc.site_moments, abs=6e-4)
    # what scrape makes of it: m is mz, |m| the length of (mx, my, mz)
    m, norm = channel_arrays(split, ["m", "|m|"], "x")
    np.testing.assert_allclose(m, 0.8 * calc.magnetization, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(norm, np.abs(calc.magnetization), rtol=1e-5, atol=1e-7)


def test_collinear_and_noncollinear_companions_are_not_mixed_up(tmp_path, vasp_dir):
    """A non-collinear OUTCAR says ISPIN = 1: LNONCOLLINEAR, not ISPIN, tells which CHGCAR fits;
    a collinear CHGCAR beside a non-spin (ISPIN = 1) OUTCAR is a mix-up too."""
    from magnb.errors import MagnbError
    from magnb.split import split_one
    from magnb.synth import make_calculation, write_calculation

    grid, meta = (8, 8, 32), {"calc_id": "x", "input_hash": "h"}
    config = SplitConfig(data_dir=tmp_path)
    nonc = make_calculation("Cr2Ge2Te6", "FM", grid=grid, spin_axis=AXIS)
    coll = make_calculation("Cr2Ge2Te6", "FM", grid=grid)
    for chgcar, outcar, message in (
        (nonc, coll, "four grid blocks .*does not say LNONCOLLINEAR = T"),
        (coll, nonc, "magnetization block but the OUTCAR says LNONCOLLINEAR = T"),
    ):
        folder = write_calculation(tmp_path / "a", chgcar)
        write_calculation(tmp_path / "b", outcar)
        shutil.copyfile(tmp_path / "b" / "OUTCAR", folder / "OUTCAR")
        with pytest.raises(MagnbError, match=message):
            split_one(folder, "CHGCAR", tmp_path / "x.h5", config, meta)
    # a non-collinear OUTCAR beside a one-block CHGCAR: cut after its first block
    folder = write_calculation(tmp_path / "cut", nonc)
    lines = (folder / "CHGCAR").read_text().splitlines(keepends=True)
    first_aug = next(i for i, line in enumerate(lines) if line.startswith("augmentation"))
    (folder / "CHGCAR").write_text("".join(lines[:first_aug]))
    with pytest.raises(MagnbError, match=r"one grid block .*\(LNONCOLLINEAR = T\): truncated"):
        split_one(folder, "CHGCAR", tmp_path / "x.h5", config, meta)
    # and one that never printed its moment
    outcar = (folder / "OUTCAR").read_text().splitlines()
    (folder / "OUTCAR").write_text("\n".join(x for x in outcar if "magnetization" not in x))
    with pytest.raises(MagnbError, match=r"\(LNONCOLLINEAR = T\) but no 'magnetization' line"):
        split_one(folder, "CHGCAR", tmp_path / "x.h5", config, meta)
    no = vasp_dir / "nitric_oxide"
    mixed = tmp_path / "no"
    shutil.copytree(no / "polarized", mixed)
    shutil.copyfile(no / "unpolarized/OUTCAR", mixed / "OUTCAR")
    (mixed / "vasprun.xml").unlink()  # the OUTCAR's ISPIN decides; pymatgen's parse is slow
    with pytest.raises(MagnbError, match="magnetization block but the OUTCAR says ISPIN = 1"):
        split_one(mixed, "CHGCAR", tmp_path / "x.h5", config, meta)
