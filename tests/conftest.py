"""Shared test fixtures: the real VASP files in ../shared/data/vasp and small helpers."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import pytest
import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
# MAGNB_VASP_FIXTURES: where they are when the tests run from a copy (`make mutants` runs them
# in mutants/, one folder deeper)
VASP_FIXTURES = Path(
    os.environ.get("MAGNB_VASP_FIXTURES") or REPO_ROOT.parent / "shared" / "data" / "vasp"
)

# Keep TensorFlow quiet and on the CPU in every test process and subprocess.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# tqdm's default write lock holds a multiprocessing RLock: a semaphore shared with every process
# forked after it was made. `make mutants` forks a test run per mutant and kills the ones that
# time out. In one whole run every fork from some point on hung waiting for that lock at its
# first bar (py-spy), each then counted a timeout, i.e. killed: most likely a run killed while
# holding it. Tests use a thread lock, which a fork copies, and no monitor thread that could
# hold it at the moment of a fork.
tqdm.tqdm.set_lock(threading.RLock())
tqdm.tqdm.monitor_interval = 0


#: a model small enough to train on the test datasets in seconds (the tests' training settings)
SMALL_MODEL = {
    "filters": [4],
    "kernel_size": [5],
    "pool": [2],
    "dense": [8],
    "epochs": 2,
    "batch_size": 4,
    "workers": 1,
}


def fixture_dir() -> Path:
    if not VASP_FIXTURES.is_dir():
        pytest.fail(
            f"the real VASP test fixtures are missing: expected {VASP_FIXTURES} "
            "(the shared/ folder beside the repository)"
        )
    return VASP_FIXTURES


@pytest.fixture(scope="session")
def vasp_dir() -> Path:
    """The read-only folder of real VASP outputs (see its SOURCES.md)."""
    return fixture_dir()


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path (symlinks by their target text)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_fixture_tree(root: Path, vasp: Path) -> Path:
    """A `<formula>/<run>/` tree built from the real fixtures (copies, never links)."""
    layout = {
        "NO/polarized": vasp / "nitric_oxide/polarized",
        "NO/unpolarized": vasp / "nitric_oxide/unpolarized",
        "Si/static": vasp / "si_static",
    }
    for rel, src in layout.items():
        shutil.copytree(src, root / rel)
    single = {
        "Fe/spin/CHGCAR": vasp / "fe_bcc/CHGCAR_spin",
        "Fe/nospin/CHGCAR": vasp / "fe_bcc/CHGCAR_no_spin",
        "Fe/slash/CHGCAR": vasp / "fe_bcc/CHGCAR_slash",
        "Li/spin/CHGCAR.gz": vasp / "li_spin/CHGCAR.gz",
        "NiO/soc/CHGCAR.gz": vasp / "nio_soc/CHGCAR.gz",
    }
    for rel, src in single.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def build_demo_data(root: Path, n_compounds: int, **scrape_settings) -> Path:
    """Stages 01-03 on a small generated tree (16 x 16 x 64 CHGCARs) under ``root``; returns the
    data folder. ``scrape_settings`` override the small defaults (16^3 samples, m+ and m-)."""
    from magnb.collect import CollectConfig, collect
    from magnb.dataset import ScrapeConfig, scrape
    from magnb.split import SplitConfig, split_all
    from magnb.synth import SynthConfig, write_demo_tree

    grid = (16, 16, 64)
    write_demo_tree(root / "vasp", SynthConfig(n_compounds=n_compounds, grid=grid), progress=False)
    data = root / "data"
    collect(CollectConfig(source=root / "vasp", data_dir=data, progress=False))
    split_all(SplitConfig(data_dir=data, progress=False, workers=1))
    settings = {
        "grid": (16, 16, 16),
        "slab_window": 12.0,
        "normalization": "maxabs",
        "fractions": (0.5, 0.25, 0.25),
        "kfold": 0,
        "workers": 1,
        **scrape_settings,
    }
    scrape(ScrapeConfig(data_dir=data, progress=False, **settings))
    return data


def h5_storage_options(storage: str, shape: tuple[int, ...]) -> dict:
    """h5py ``create_dataset`` options for a ``samples`` dataset of samples ``shape``, stored
    ``none``/``gzip`` (scrape's codecs), ``lzf`` (a filter magnb does not write) or
    ``contiguous`` (no chunks): the storage paths the loader reads."""
    from magnb.store import CODECS

    return {
        "none": {"chunks": (1, *shape), **CODECS["none"]},
        "gzip": {"chunks": (1, *shape), **CODECS["gzip"]},
        "lzf": {"chunks": (1, *shape), "compression": "lzf"},
        "contiguous": {},
    }[storage]
