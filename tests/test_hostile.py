"""Hostile trees and hostile configs: each case here lost data, mixed it up or crashed before
(issue 11); now it is one failure row, or one clear error line, and nothing else changes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from magnb.collect import CollectConfig, calc_id, collect
from magnb.config import TrainConfig, from_mapping, load_train_config, load_yaml
from magnb.dataset import ScrapeConfig, read_table, scrape
from magnb.errors import ConfigError, MagnbError
from magnb.split import SplitConfig, split_all
from tests.conftest import REPO_ROOT, tree_hashes

SCRAPE = {"grid": (8, 8, 8), "slab_window": 12.0, "kfold": 0, "workers": 1, "progress": False}


def _synth_calc(tmp_path: Path) -> Path:
    """One generated calculation folder (CHGCAR + companions) to copy into hostile trees."""
    from magnb.synth import SynthConfig, write_demo_tree

    tree = tmp_path / "synth"
    if not tree.exists():
        write_demo_tree(tree, SynthConfig(n_compounds=2, grid=(8, 8, 32)), progress=False)
    return tree


def _calcs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in _synth_calc(tmp_path).rglob("CHGCAR"))


def _collect(src: Path, data: Path, **kw) -> pd.DataFrame:
    return collect(CollectConfig(source=src, data_dir=data, progress=False, **kw)).manifest


def _collected_and_split(tmp_path: Path) -> tuple[Path, Path]:
    """The fault harness's small tree, collected and split into ``<tmp_path>/w/data``."""
    from tests.fault_harness import _collect, _split, _tree

    work = tmp_path / "w"
    _tree(work)
    data = work / "data"
    _collect(data, work)
    _split(data, work)
    return work, data


# --------------------------------------------------------------------------------------------
# calc ids


def test_colliding_folder_names_keep_three_calculations(tmp_path):
    """'x y/run', 'x_y/run' and 'x_y/run-2' once gave two rows 'x_y__run-2' and lost one."""
    calcs = _calcs(tmp_path)
    src = tmp_path / "src"
    for rel, calc in zip(["x y/run", "x_y/run", "x_y/run-2"], calcs, strict=False):
        shutil.copytree(calc, src / rel)
    manifest = _collect(src, tmp_path / "data", layout="{formula}/{run}/CHGCAR*")
    assert len(manifest) == 3 and manifest["calc_id"].is_unique
    assert (manifest["status"] == "ok").all(), manifest["error"].tolist()
    # each raw copy is its own calculation's CHGCAR
    for row in manifest.itertuples():
        rel = Path(row.source_path).relative_to(src.resolve())
        original = (src / rel / "CHGCAR").read_bytes()
        assert (tmp_path / "data/raw" / row.calc_id / "CHGCAR").read_bytes() == original
    split_all(SplitConfig(data_dir=tmp_path / "data", workers=1, progress=False))
    # the ids are the same on a re-run, and a clean name keeps its readable id
    again = _collect(src, tmp_path / "data", layout="{formula}/{run}/CHGCAR*")
    assert again["calc_id"].tolist() == manifest["calc_id"].tolist()
    assert "x_y__run" in set(manifest["calc_id"])


@pytest.mark.parametrize(
    "paths",
    [
        ["a/b", "a__b"],
        ["a_/b", "a/_b"],
        ["x y/run", "x_y/run", "x_y/run~0"],
        ["é/run", "e/run", "_/run", "./run"],
        ["a/b/c", "a__b/c", "a/b__c"],
    ],
)
def test_calc_ids_are_unique_by_construction(paths):
    ids = [calc_id(p) for p in paths]
    assert len(set(ids)) == len(ids), ids
    assert all(len(i) <= 200 and "/" not in i and not i.startswith(".") for i in ids)


def test_calc_ids_of_long_names_stay_legal():
    long = "A" * 250
    assert len(calc_id(f"{long}/run")) <= 200
    assert calc_id(f"{long}/run") != calc_id(f"{long}B/run")


# --------------------------------------------------------------------------------------------
# odd entries in the tree


def test_hostile_tree_entries_are_failure_rows(tmp_path):
    """Symlink loops, FIFOs, device files, a folder named CHGCAR, names with spaces, newlines
    and unicode, a lone symlink out of the tree (and one into a sibling folder whose name
    begins with the tree's): one row each, nothing followed or written."""
    calcs = _calcs(tmp_path)
    src = tmp_path / "src"
    good = {"Cr2Ge2Te6 é/run one", "Cr2Ge2Te6/new\nline"}
    for rel, calc in zip(sorted(good), calcs, strict=False):
        shutil.copytree(calc, src / rel)
    (src / "Loop/run").mkdir(parents=True)
    os.symlink("CHGCAR", src / "Loop/run/CHGCAR")  # points at itself
    (src / "Fifo/run").mkdir(parents=True)
    os.mkfifo(src / "Fifo/run/CHGCAR")
    (src / "Dev/run").mkdir(parents=True)
    os.mknod(src / "Dev/run/CHGCAR", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    (src / "Dir/run/CHGCAR").mkdir(parents=True)
    outside = tmp_path / "outside"
    shutil.copytree(calcs[-1], outside)
    (src / "Out/run").mkdir(parents=True)
    os.symlink(outside / "CHGCAR", src / "Out/run/CHGCAR")  # alone: nothing else to pick
    # a sibling whose name starts with the tree's ("src-sibling"): outside all the same
    sibling = tmp_path / "src-sibling"
    shutil.copytree(calcs[-1], sibling)
    (src / "Sib/run").mkdir(parents=True)
    os.symlink(sibling / "CHGCAR", src / "Sib/run/CHGCAR")
    (src / "DirLoop").mkdir()
    os.symlink("..", src / "DirLoop/up")  # a folder loop: walked once
    before = tree_hashes(src)
    manifest = _collect(src, tmp_path / "data").set_index("calc_id")
    assert tree_hashes(src) == before
    failed = manifest[manifest["status"] == "failed"]["error"].to_dict()
    expected = {
        "Loop__run": "symlink loop",
        "Fifo__run": "a FIFO",
        "Dev__run": "a character device",
        "Dir__run": "a folder",
        "Out__run": "leaves the source tree",
        "Sib__run": "leaves the source tree",
    }
    assert set(failed) == set(expected), failed
    for cid, text in expected.items():
        assert text in failed[cid] and "\n" not in failed[cid], failed[cid]
    ok = manifest[manifest["status"] == "ok"]
    assert len(ok) == len(good)
    assert not (tmp_path / "data/raw/Out__run").exists()  # the outside file was not copied
    assert not (tmp_path / "data/raw/Sib__run").exists()


def test_a_legal_247_character_name_is_collected(tmp_path):
    calc = _calcs(tmp_path)[0]
    src = tmp_path / "src"
    name = "CHGCAR_" + "x" * 240
    (src / "Long/run").mkdir(parents=True)
    shutil.copyfile(calc / "CHGCAR", src / "Long/run" / name)
    manifest = _collect(src, tmp_path / "data", layout="{formula}/{run}/CHGCAR*")
    assert manifest["status"].tolist() == ["ok"], manifest["error"].tolist()
    assert (tmp_path / "data/raw/Long__run" / name).is_file()


def _as_nobody(fn, *args) -> int:
    """Run ``fn(*args)`` in a fork as user nobody (root reads everything); its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            fn(*args)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_unreadable_files_and_folders_are_failure_rows(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test drops to user nobody and needs root (CI runs as root)")
    calcs = _calcs(tmp_path)
    # a folder every user can reach (pytest's own is root's alone)
    top = Path(tempfile.mkdtemp(prefix="magnb-nobody-", dir="/tmp"))
    top.chmod(0o755)
    tmp_path = top
    src = tmp_path / "src"
    for rel, calc in zip(["A2/FM", "B2/FM", "C2/FM"], calcs, strict=False):
        shutil.copytree(calc, src / rel)
    (src / "B2/FM/CHGCAR").chmod(0o000)
    (src / "C2").chmod(0o000)  # a formula folder nobody can list
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 65534, 65534)
    for p in (tmp_path, src):
        p.chmod(0o755)

    def run() -> None:
        _collect(src, data)

    try:
        assert _as_nobody(run) == 0
    finally:
        (src / "C2").chmod(0o755)
    manifest = pd.read_parquet(data / "manifest.parquet").set_index("calc_id")
    assert manifest.loc["A2__FM", "status"] == "ok"
    assert manifest.loc["B2__FM", "status"] == "failed"
    assert "permission denied" in manifest.loc["B2__FM", "error"]
    assert "CHGCAR" in manifest.loc["B2__FM", "error"]
    assert manifest.loc["C2", "status"] == "failed"  # the folder, not silently nothing
    assert "cannot read this folder" in manifest.loc["C2", "error"]
    shutil.rmtree(top)


@pytest.mark.parametrize("blocks", [3, 5])
def test_a_chgcar_with_an_odd_number_of_blocks_fails(tmp_path, blocks):
    """3 or 5 grid blocks with no companions was read as a non-spin run, status ok."""
    calc = _calcs(tmp_path)[0]
    text = (calc / "CHGCAR").read_text()
    lines = text.splitlines(keepends=True)
    natoms = sum(int(n) for n in lines[6].split())
    dims_at = 8 + natoms + 1
    header, body = "".join(lines[:dims_at]), "".join(lines[dims_at:])
    first = body.split("augmentation")[0] if "augmentation" in body else body
    dims = lines[dims_at]
    block = first[len(dims) :] if first.startswith(dims) else first
    src = tmp_path / "src/X2/FM"
    src.mkdir(parents=True)
    (src / "CHGCAR").write_text(header + "".join(dims + block for _ in range(blocks)))
    manifest = _collect(tmp_path / "src", tmp_path / "data")
    assert manifest["status"].tolist() == ["failed"]
    assert f"has {blocks} grid blocks" in manifest["error"][0]


# --------------------------------------------------------------------------------------------
# folders


def test_source_inside_data_and_data_inside_source_are_refused(tmp_path):
    calc = _calcs(tmp_path)[0]
    data = tmp_path / "data"
    shutil.copytree(calc, data / "raw/X2/FM")
    before = tree_hashes(data)
    with pytest.raises(MagnbError, match="source tree must not be inside the data folder"):
        _collect(data / "raw", data)
    link = tmp_path / "link-to-raw"
    link.symlink_to(data / "raw")
    with pytest.raises(MagnbError, match="source tree must not be inside"):
        _collect(link, data)  # the same, through a symlink
    with pytest.raises(MagnbError, match="data folder must not be inside the source"):
        _collect(tmp_path, tmp_path / "inside")
    with pytest.raises(MagnbError, match="same folder"):
        _collect(data, data)
    assert tree_hashes(data) == before


def test_a_moved_data_folder_works_from_any_directory(tmp_path, monkeypatch):
    """The split index once held cwd-relative paths: a scrape from another directory used
    another folder's densities with this folder's labels."""
    work, data = _collected_and_split(tmp_path)
    index = pd.read_parquet(data / "split/index.parquet")
    assert all(p.startswith("split/") for p in index["path"])
    moved = tmp_path / "elsewhere/data"
    moved.parent.mkdir()
    shutil.move(str(data), moved)
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = scrape(ScrapeConfig(data_dir=Path("data"), **SCRAPE))
    monkeypatch.chdir(REPO_ROOT)
    table = read_table(moved)
    ok = table[table["sample"] >= 0]
    assert len(ok) == int((result.table["status"] == "ok").sum()) > 0
    from magnb.dataset import make_sample

    with h5py.File(moved / "dataset.h5") as f:
        for row in ok.itertuples():
            expected, _ = make_sample(
                moved / row.split_file, ScrapeConfig(data_dir=moved, **SCRAPE)
            )
            np.testing.assert_array_equal(f["samples"][row.sample], expected)


# --------------------------------------------------------------------------------------------
# interrupted and damaged outputs


def test_a_split_killed_before_its_index_is_not_read_stale(tmp_path):
    """Change two sources, re-collect, kill split after one split file and before the index:
    scrape refuses the half-updated folder, and a re-run of split gives the new numbers."""
    from tests.fault_harness import _collect as collect_tree
    from tests.fault_harness import _split, _tree

    work = tmp_path / "w"
    tree = _tree(work)
    data = work / "data"
    collect_tree(data, work)
    _split(data, work)
    old = pd.read_parquet(data / "split/index.parquet").set_index("calc_id")
    chgcars = sorted(p for p in tree.rglob("CHGCAR") if "Bad" not in str(p))[:2]
    for p in chgcars:  # double the magnetization block: the moment doubles
        text = p.read_text()
        p.write_text(text.replace("augmentation", "augmentation", 1))
        lines = p.read_text().splitlines(keepends=True)
        p.write_text("".join(lines[:-1]) + lines[-1].replace("0", "1", 1))
    collect_tree(data, work)
    code = (
        "import os, sys; from pathlib import Path; os.environ['MAGNB_FAULT'] = 'kill@3';"
        "from magnb.split import SplitConfig, split_all;"
        "split_all(SplitConfig(data_dir=Path(sys.argv[1]), workers=1, progress=False))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(data)], cwd=REPO_ROOT)
    assert done.returncode == -signal.SIGKILL
    with pytest.raises(MagnbError, match="incomplete"):
        scrape(ScrapeConfig(data_dir=data, **SCRAPE))
    _split(data, work)
    new = pd.read_parquet(data / "split/index.parquet").set_index("calc_id")
    for cid in new.index:
        path = data / new.loc[cid, "path"]
        if new.loc[cid, "status"] == "ok":
            with h5py.File(path) as f:
                assert f.attrs["input_hash"] == new.loc[cid, "input_hash"]
                assert f.attrs["moment_integral"] == pytest.approx(new.loc[cid, "moment_integral"])
    ok = new["status"] == "ok"
    assert (old.loc[ok, "input_hash"] != new.loc[ok, "input_hash"]).sum() == 2


def test_a_table_of_another_build_is_refused_and_rebuilt(tmp_path):
    """dataset.h5 once went into place before table.parquet: a kill between the two left a new
    dataset with the old table, and the next scrape said 'dataset unchanged'."""
    work, data = _collected_and_split(tmp_path)
    scrape(ScrapeConfig(data_dir=data, seed=1, **SCRAPE))
    old_table = (data / "table.parquet").read_bytes()
    scrape(ScrapeConfig(data_dir=data, seed=2, **SCRAPE))
    (data / "table.parquet").write_bytes(old_table)  # the old table beside the new dataset
    with pytest.raises(MagnbError, match="different builds"):
        read_table(data)
    result = scrape(ScrapeConfig(data_dir=data, seed=2, **SCRAPE))
    assert not result.skipped_build
    read_table(data)  # one build again


def test_a_truncated_split_file_is_a_skip_row(tmp_path):
    work, data = _collected_and_split(tmp_path)
    index = pd.read_parquet(data / "split/index.parquet")
    victim = index[index["status"] == "ok"].iloc[0]
    path = data / victim["path"]
    path.write_bytes(path.read_bytes()[:1000])
    result = scrape(ScrapeConfig(data_dir=data, **SCRAPE))
    row = result.table.set_index("calc_id").loc[victim["calc_id"]]
    assert row["status"] == "skipped" and "damaged split file" in row["reason"]
    assert int((result.table["status"] == "ok").sum()) == int((index["status"] == "ok").sum()) - 1


def test_a_damaged_dataset_is_a_clear_error_for_train(tmp_path):
    work, data = _collected_and_split(tmp_path)
    scrape(ScrapeConfig(data_dir=data, **SCRAPE))
    h5 = data / "dataset.h5"
    h5.write_bytes(h5.read_bytes()[:4096])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset_dir: {data}\nruns_dir: {tmp_path / 'runs'}\nepochs: 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "magnb.cli", "train", str(cfg)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "dataset.h5" in lines[0] and "damaged" in lines[0], lines


@pytest.mark.slow
def test_killed_split_workers_die_with_it(tmp_path):
    """kill -9 of `split --workers 2` once left both workers running, writing split files."""
    from tests.fault_harness import _collect as collect_tree
    from tests.fault_harness import _tree

    work = tmp_path / "w"
    _tree(work)
    data = work / "data"
    collect_tree(data, work)
    cmd = [sys.executable, "-m", "magnb.cli", "split", str(data), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    children: list[int] = []
    while time.time() < deadline and len(children) < 2:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
        time.sleep(0.05)
    assert len(children) >= 2, "the workers did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    alive = children
    while alive and time.time() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and _state(p) != "Z"]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their parent"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "X"


# --------------------------------------------------------------------------------------------
# configs


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "magnb.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB, "aliases"),
        ("epochs: 2\nepochs: 3\n", "given twice"),
        ("learning_rate: .nan\n", "finite"),
        ("- a\n- b\n", "must be a mapping"),
        ("activation: bogus\n", "activation 'bogus'"),
        ("seed: -1\n", "seed must be in"),
        ("dropout: .inf\n", "finite"),
        ("epochs: [1, 2\n", "invalid YAML"),
    ],
)
def test_bad_train_configs_are_one_clear_line(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_train_config(cfg)
    assert message in str(info.value) and str(cfg) in str(info.value)
    # one line, short beside its path (the temporary folder's name varies in length)
    assert len(str(info.value).replace(str(cfg), "")) < 400 and "\n" not in str(info.value)


def test_a_binary_config_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(cfg)
    cfg.write_bytes(b"epochs: 2\x00\n")
    with pytest.raises(ConfigError, match="NUL"):
        load_yaml(cfg)


def test_the_alias_bomb_fails_fast_and_small(tmp_path):
    import resource

    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(BOMB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ConfigError):
        load_yaml(cfg)
    assert time.perf_counter() - start < 5  # a refusal, not an expansion (generous bound)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cube_points": 0, "representation": "cube"}, "cube_points >= 1"),
        ({"grid": (2048, 2048, 2048)}, "HDF5 chunk"),
        ({"grid": (512, 512, 512), "supercell": (4, 4, 1)}, "HDF5 chunk"),
        ({"threshold": float("nan")}, "finite"),
        ({"seed": -1}, "seed must be in"),
        ({"slab_window": -3.0}, "slab_window must be > 0"),
    ],
)
def test_bad_scrape_configs_fail_before_any_work(tmp_path, settings, message):
    with pytest.raises(MagnbError, match=message):
        from_mapping(ScrapeConfig, {"data_dir": str(tmp_path), **settings})


def test_train_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="activation"):
        TrainConfig(activation="bogus")
    for seed in (-1, 2**32):
        with pytest.raises(ConfigError, match="seed"):
            TrainConfig(seed=seed)
    TrainConfig(seed=2**32 - 1, activation="gelu")


def test_the_activations_allowed_are_keras_element_wise_ones():
    import keras

    from magnb.config import ACTIVATIONS

    x = keras.ops.convert_to_tensor(np.linspace(-2, 2, 12, dtype="float32").reshape(3, 4))
    for name in ACTIVATIONS:
        y = keras.activations.get(name)(x)
        assert tuple(y.shape) == (3, 4), name


def test_cli_config_errors_are_one_line_and_fast(tmp_path):
    """A typo costs an import of magnb, not of TensorFlow."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochz: 2\n")
    start = time.perf_counter()
    done = _cli("train", str(cfg))
    elapsed = time.perf_counter() - start
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key(s) epochz" in lines[0], done.stderr
    code = (
        "import sys, runpy; sys.argv = ['magnb', 'train', sys.argv[1]];"
        "import magnb.cli as c\ntry:\n    c.main(sys.argv[1:])\nfinally:\n"
        "    print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    seen = subprocess.run(
        [sys.executable, "-c", code, str(cfg)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert seen.stdout.split() == ["False", "False"], (seen.stdout, seen.stderr, elapsed)


def test_disk_errors_in_the_cli_are_one_line(tmp_path):
    """ENOSPC, injected at the first write of collect, ends `magnb collect` with one line."""
    from tests.fault_harness import _tree

    work = tmp_path / "collect"
    tree = _tree(work)
    env = {**os.environ, "MAGNB_FAULT": "enospc@1"}
    done = subprocess.run(
        [sys.executable, "-m", "magnb.cli", "collect", str(tree), str(tmp_path / "data")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0] and str(tmp_path) in lines[0], lines
    assert json  # (json used by other tests in this module)


# --------------------------------------------------------------------------------------------
# re-collect at the cost of what changed


def test_recollect_hashes_only_what_changed_and_catches_in_place_edits(tmp_path, monkeypatch):
    """A re-collect of an unchanged tree reads no file; a source edited in place with its size
    and mtime put back is caught by its ctime; --verify re-hashes everything."""
    import magnb.collect as collect_module

    calcs = _calcs(tmp_path)
    src = tmp_path / "src"
    for rel, calc in zip(["A2/FM", "B2/FM"], calcs, strict=False):
        shutil.copytree(calc, src / rel)
    data = tmp_path / "data"
    _collect(src, data)
    hashed: list[str] = []
    real = collect_module.sha256_file
    monkeypatch.setattr(collect_module, "sha256_file", lambda p: hashed.append(str(p)) or real(p))
    again = _collect(src, data)
    assert hashed == [] and (again["status"] == "ok").all()

    chgcar = src / "A2/FM/CHGCAR"
    st = chgcar.stat()
    text = chgcar.read_bytes()
    edited = text[:-2] + (b"7" if text[-2:-1] != b"7" else b"8") + text[-1:]
    time.sleep(0.01)
    chgcar.write_bytes(edited)  # same size
    os.utime(chgcar, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime; the ctime moves
    assert chgcar.stat().st_size == st.st_size and chgcar.stat().st_mtime_ns == st.st_mtime_ns
    third = _collect(src, data).set_index("calc_id")
    assert hashed == [str(chgcar)]
    assert (data / "raw/A2__FM/CHGCAR").read_bytes() == edited
    assert third.loc["A2__FM", "sha256"] == real(chgcar)

    hashed.clear()
    collect(CollectConfig(source=src, data_dir=data, progress=False, verify=True))
    assert len(hashed) >= 2 * len(list(src.rglob("CHGCAR")))  # sources and raw copies


def test_a_damaged_raw_copy_is_copied_again(tmp_path):
    """A raw copy changed behind collect's back (another inode or size) is replaced."""
    calc = _calcs(tmp_path)[0]
    src = tmp_path / "src"
    shutil.copytree(calc, src / "A2/FM")
    data = tmp_path / "data"
    _collect(src, data)
    raw = data / "raw/A2__FM/CHGCAR"
    raw.write_bytes(raw.read_bytes()[:100])
    _collect(src, data)
    assert raw.read_bytes() == (src / "A2/FM/CHGCAR").read_bytes()
