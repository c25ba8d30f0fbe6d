"""Stage 01: finding calculations by layout, provenance, idempotence, a read-only source tree."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from magnb.collect import CollectConfig, collect, layout_regex, safe_id
from magnb.errors import MagnbError
from tests.conftest import make_fixture_tree, tree_hashes


@pytest.fixture
def tree(tmp_path, vasp_dir):
    return make_fixture_tree(tmp_path / "calcs", vasp_dir)


def run(source, data, **kw):
    return collect(CollectConfig(source=source, data_dir=data, progress=False, **kw))


def test_collects_every_fixture_with_provenance(tree, tmp_path):
    before = tree_hashes(tree)
    result = run(tree, tmp_path / "data")
    m = result.manifest.set_index("calc_id")
    assert set(m.index) == {
        "NO__polarized", "NO__unpolarized", "Si__static", "Fe__spin", "Fe__nospin",
        "Fe__slash", "Li__spin", "NiO__soc",
    }  # fmt: skip
    assert (m["status"] == "ok").all()
    assert m.loc["NO__polarized", "spin_kind"] == "collinear"
    assert m.loc["NO__unpolarized", "spin_kind"] == "none"
    assert m.loc["NiO__soc", "spin_kind"] == "noncollinear"
    assert m.loc["NiO__soc", "formula"] == "NiO"
    assert m.loc["Fe__slash", "formula"] == "Fe"
    assert m.loc["Si__static", "run"] == "static"
    files = {f["name"] for f in json.loads(m.loc["NO__polarized", "files"])}
    assert files == {"CHGCAR", "OUTCAR", "OSZICAR", "vasprun.xml", "INCAR"}
    # the copies are byte-identical and the manifest's hash is the source's
    raw = tmp_path / "data/raw/NO__polarized"
    assert tree_hashes(raw)["CHGCAR"] == m.loc["NO__polarized", "sha256"]
    assert tree_hashes(raw) == {
        k.split("/")[-1]: v for k, v in before.items() if k.startswith("NO/polarized/")
    }
    assert tree_hashes(tree) == before
    on_disk = pd.read_parquet(tmp_path / "data/manifest.parquet")
    pd.testing.assert_frame_equal(on_disk, result.manifest)


def test_rerun_is_idempotent_and_sees_changes(tree, tmp_path):
    first = run(tree, tmp_path / "data")
    assert first.counts["new"] == 8
    second = run(tree, tmp_path / "data")
    assert second.counts == {**first.counts, "new": 0, "unchanged": 8}
    pd.testing.assert_frame_equal(first.manifest, second.manifest)
    shutil.copyfile(tree / "Fe/spin/CHGCAR", tree / "Fe/nospin/CHGCAR")
    third = run(tree, tmp_path / "data")
    assert third.counts["updated"] == 1 and third.counts["unchanged"] == 7
    assert third.manifest.set_index("calc_id").loc["Fe__nospin", "spin_kind"] == "collinear"


def test_seed_layout_and_flat_folder(tmp_path, vasp_dir):
    seed = tmp_path / "seed"
    for name in ("CrSiTe3", "MnPS3"):
        (seed / name / "spin_so").mkdir(parents=True)
        (seed / name / "relax").mkdir(parents=True)
        shutil.copyfile(vasp_dir / "fe_bcc/CHGCAR_spin", seed / name / "spin_so/CHGCAR")
        shutil.copyfile(vasp_dir / "fe_bcc/CHGCAR_spin", seed / name / "relax/CHGCAR")
    result = run(seed, tmp_path / "d1", layout="{compound}/spin_so/CHGCAR")
    assert sorted(result.manifest["calc_id"]) == ["CrSiTe3__spin_so", "MnPS3__spin_so"]
    assert json.loads(result.manifest["fields"].iloc[0]) == {"compound": "CrSiTe3"}

    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.CHGCAR", "b.CHGCAR"):
        shutil.copyfile(vasp_dir / "fe_bcc/CHGCAR_spin", flat / name)
    result = run(flat, tmp_path / "d2", layout="{calc}.CHGCAR")
    assert sorted(result.manifest["calc_id"]) == ["a.CHGCAR", "b.CHGCAR"]


def test_symlinks_leaving_the_tree_are_not_followed(tree, tmp_path, vasp_dir):
    outside = tmp_path / "outside/Mn/FM"
    outside.mkdir(parents=True)
    shutil.copyfile(vasp_dir / "fe_bcc/CHGCAR_spin", outside / "CHGCAR")
    os.symlink(tmp_path / "outside/Mn", tree / "Mn")
    os.symlink(tmp_path / "outside/Mn/FM/CHGCAR", tree / "Fe/spin/CHGCAR.gz")
    # a link inside the tree is followed, and a folder reached twice is collected once
    (tree / "archive/old/Co/FM").mkdir(parents=True)
    shutil.copyfile(vasp_dir / "fe_bcc/CHGCAR_spin", tree / "archive/old/Co/FM/CHGCAR")
    os.symlink(tree / "archive/old/Co", tree / "Co")
    os.symlink(tree / "Fe", tree / "Iron")
    result = run(tree, tmp_path / "data")
    ids = set(result.manifest["calc_id"])
    assert not any(i.startswith("Mn") for i in ids)
    assert "Co__FM" in ids
    assert not any(i.startswith("Iron") for i in ids)
    assert result.manifest.set_index("calc_id").loc["Fe__spin", "chgcar"] == "CHGCAR"


def test_missing_chgcar_and_empty_file_are_failure_rows(tree, tmp_path, vasp_dir):
    (tree / "Co/FM").mkdir(parents=True)
    shutil.copyfile(vasp_dir / "nitric_oxide/polarized/OUTCAR", tree / "Co/FM/OUTCAR")
    (tree / "Ni/AFM").mkdir(parents=True)
    (tree / "Ni/AFM/CHGCAR").write_bytes(b"")
    result = run(tree, tmp_path / "data")
    failed = result.failures.set_index("calc_id")["error"]
    assert set(failed.index) == {"Co__FM", "Ni__AFM"}
    assert "Co/FM" in failed["Co__FM"] and "no file matching 'CHGCAR*'" in failed["Co__FM"]
    assert "Ni/AFM/CHGCAR" in failed["Ni__AFM"] and "empty" in failed["Ni__AFM"]
    assert result.counts["failed"] == 2 and result.counts["new"] == 8
    assert "FAILED Co__FM" in result.summary()


def test_hardlink_mode(tree, tmp_path):
    run(tree, tmp_path / "data", mode="hardlink")
    a = (tree / "Fe/spin/CHGCAR").stat()
    b = (tmp_path / "data/raw/Fe__spin/CHGCAR").stat()
    assert a.st_ino == b.st_ino


def test_bad_configuration(tmp_path):
    with pytest.raises(MagnbError, match="does not exist"):
        run(tmp_path / "nope", tmp_path / "data")
    with pytest.raises(MagnbError, match="mode"):
        CollectConfig(source=tmp_path, data_dir=tmp_path / "d", mode="move")
    with pytest.raises(MagnbError, match="inside the source"):
        run(tmp_path, tmp_path / "data")


def test_layout_regex_and_safe_ids():
    r = layout_regex("{formula}/{run}/CHGCAR*")
    assert r.match("CrI3/FM/CHGCAR.gz").groupdict() == {"formula": "CrI3", "run": "FM"}
    assert not r.match("CrI3/FM/extra/CHGCAR")
    assert layout_regex("**/CHGCAR").match("a/b/c/CHGCAR")
    assert safe_id("Cr2Ge2Te6/spin so/../x") == "Cr2Ge2Te6_spin_so_.._x"
    assert safe_id("..hidden") == "hidden"
    with pytest.raises(MagnbError):
        layout_regex("/abs/{x}")
