"""Stage 02's cross-checks of a CHGCAR against its OUTCAR/OSZICAR/vasprun.xml, each refusal by
its exact message (the tests ``make mutants`` needed for magnb/split.py; see tests/MUTANTS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from magnb.errors import MagnbError
from magnb.split import check_consistency
from magnb.vasp import ChargeDensity, Moments


def _density(spin: str, natoms: int = 2) -> ChargeDensity:
    from pymatgen.core import Lattice, Structure

    structure = Structure(
        Lattice.cubic(3.0), ["Fe"] * natoms, np.linspace(0, 0.5, natoms * 3).reshape(natoms, 3)
    )
    total = np.ones((2, 2, 2))
    mag = {"none": None, "collinear": np.ones((2, 2, 2)), "noncollinear": np.ones((3, 2, 2, 2))}
    return ChargeDensity(Path("run/CHGCAR"), structure, total, mag[spin])


def _refusal(density: ChargeDensity, moments: Moments) -> str:
    with pytest.raises(MagnbError) as exc:
        check_consistency(density, moments, Path("run"))
    assert exc.value.path == str(Path("run/CHGCAR"))  # the CHGCAR is named, not the folder
    return exc.value.reason


def test_matching_files_pass() -> None:
    for spin, ispin in (("none", 1), ("collinear", 2), ("noncollinear", None), ("none", None)):
        per_site = np.array([2.0, -2.0])
        check_consistency(
            _density(spin), Moments(natoms=2, ispin=ispin, per_site=per_site), Path("run")
        )
    check_consistency(_density("collinear"), Moments(), Path("run"))  # no companion at all


def test_atom_count_mismatch() -> None:
    reason = _refusal(_density("collinear", 2), Moments(natoms=3, source="OUTCAR"))
    assert reason == "has 2 atoms but OUTCAR reports 3 (NIONS): files from different calculations?"
    reason = _refusal(_density("collinear", 2), Moments(natoms=1))
    assert reason == (
        "has 2 atoms but OUTCAR/OSZICAR/vasprun.xml reports 1 (NIONS): "
        "files from different calculations?"
    )


def test_site_table_length_mismatch() -> None:
    reason = _refusal(_density("collinear", 2), Moments(per_site=np.array([1.0, 1.0, 0.0])))
    assert reason == "has 2 atoms but the OUTCAR magnetization table has 3 rows"


def test_one_block_for_a_spin_polarized_run() -> None:
    reason = _refusal(_density("none"), Moments(ispin=2))
    assert reason == (
        "has one grid block but the run is spin-polarized (ISPIN = 2): "
        "truncated after the first block?"
    )


def test_magnetization_block_for_a_run_without_spin() -> None:
    reason = _refusal(_density("collinear"), Moments(ispin=1))
    assert reason == "has a magnetization block but the OUTCAR says ISPIN = 1: mixed-up files?"


def test_four_blocks_for_a_run_that_is_not_noncollinear() -> None:
    # VASP prints ISPIN = 1 for a non-collinear run too: only LNONCOLLINEAR tells them apart
    reason = _refusal(_density("noncollinear"), Moments(ispin=1))
    assert reason == (
        "has four grid blocks (non-collinear) but OUTCAR/OSZICAR/vasprun.xml does not say "
        "LNONCOLLINEAR = T: mixed-up files?"
    )
    check_consistency(_density("noncollinear"), Moments(ispin=1, noncollinear=True), Path("run"))
