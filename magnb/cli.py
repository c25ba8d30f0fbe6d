"""The ``magnb`` command: the same functions the notebooks call, from the shell.

magnb synth  OUT                 write the generated demo calculation tree
magnb collect SOURCE DATA        stage 01
magnb split DATA                 stage 02
magnb config scrape|train        the effective config, defaults filled in; `reference`: docs/config.md
magnb demo [--out demo]          the main job on the demo data: synth, then notebooks in order
magnb submit CONFIG [--gpus N]   the sbatch call for a config, sweep or scrape (--dry-run prints it)
magnb doctor                     versions, devices, a tiny training on each device

Exit status: 0 done; 2 a problem with the input (the message names the file); 3 the stage ran
but produced nothing usable (every calculation failed, every sample was skipped: the message gives
the count and the commonest reason).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from magnb.errors import EXIT_NOTHING_USABLE, MagnbError, NothingUsableError, nothing_usable

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
CONFIGS = REPO_ROOT / "configs"
KERNEL_NAME = "magnb"


def kernel_name() -> str:
    """The Jupyter kernel to run notebooks with: the project's ``magnb`` kernel (installed into the
    venv by ``make``) when it exists, else ``python3`` of the running interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebook(name: str, out_dir: Path, parameters: dict, cwd: Path | None = None) -> Path:
    """Execute ``notebooks/<name>`` with papermill, leaving the executed copy in ``out_dir``."""
    import papermill as pm

    src = NOTEBOOKS / name
    if not src.is_file():
        raise MagnbError("notebook not found", src)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / name
    pm.execute_notebook(
        str(src),
        str(out),
        parameters=parameters,
        kernel_name=kernel_name(),
        cwd=str(cwd or NOTEBOOKS),
        progress_bar=False,
    )
    return out


def cmd_synth(args: argparse.Namespace) -> int:
    from magnb.synth import SynthConfig, write_demo_tree

    config = SynthConfig.demo(*([args.compounds] if args.compounds else []))
    folders = write_demo_tree(Path(args.out), config)
    print(f"synth: wrote {len(folders)} generated demo calculations under {args.out}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from magnb.collect import CollectConfig, collect

    result = collect(
        CollectConfig(
            source=args.source,
            data_dir=args.data,
            layout=args.layout,
            mode=args.mode,
            verify=args.verify,
        )
    )
    print(result.summary())
    manifest = result.manifest
    if len(manifest) == 0:
        from magnb.collect import suggest_layout

        hint = suggest_layout(Path(args.source))
        where = f"in {args.source}" + (
            f"; CHGCARs lie elsewhere: try --layout {hint!r}"
            if hint and hint != args.layout
            else ""
        )
        raise NothingUsableError(
            "collect", f"calculation matching --layout {args.layout!r}", 0, where, 0
        )
    if (manifest["status"] == "failed").all():
        raise nothing_usable(
            "collect",
            "calculations",
            manifest["error"].fillna("").astype(str).tolist(),
            verb="failed",
            listed="the FAILED lines above",
        )
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from magnb.split import SplitConfig, split_all

    result = split_all(
        SplitConfig(data_dir=args.data, workers=args.workers, export_chgcar=args.chgcar)
    )
    print(result.summary())
    index = result.index
    if not (index["status"] == "ok").any():
        raise nothing_usable(
            "split",
            "calculations",
            index["error"].fillna("").astype(str).tolist(),
            verb="failed",
            listed="the FAILED lines above",
        )
    return 0


def scrape_settings(args: argparse.Namespace) -> tuple[dict, str]:
    """The ScrapeConfig mapping of a ``magnb scrape``/``magnb config scrape`` command line, and
    where it came from (the config file, or the built-in defaults)."""
    from magnb.config import load_yaml

    settings = load_yaml(args.config) if args.config else {}
    settings["data_dir"] = args.data
    if getattr(args, "out", None):
        settings["out_dir"] = args.out
    if getattr(args, "workers", None) is not None:
        settings["workers"] = args.workers
    if getattr(args, "shard", None):
        try:
            i, n = (int(v) for v in args.shard.split("/"))
        except ValueError as exc:
            raise MagnbError(f"--shard takes i/n (e.g. 0/4), not {args.shard!r}") from exc
        settings["shard"] = [i, n]
    return settings, args.config or "command line"


def cmd_scrape(args: argparse.Namespace) -> int:
    from magnb.config import from_mapping
    from magnb.dataset import ScrapeConfig, scrape

    settings, where = scrape_settings(args)
    config = from_mapping(ScrapeConfig, settings, where)
    if not args.config:
        print(
            "scrape: no --config: the built-in defaults (docs/config.md; "
            "`magnb config scrape` prints them)"
        )
    print(scrape(config).summary())
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from magnb.config import (
        TrainConfig,
        effective_yaml,
        from_mapping,
        load_yaml,
        reference_markdown,
    )

    if args.which == "reference":
        print(reference_markdown(), end="")
        return 0
    if args.which == "scrape":
        from magnb.dataset import ScrapeConfig

        settings, where = scrape_settings(args)
        given = set(settings) - ({"data_dir"} if args.data == "DATA" else set())
        config = from_mapping(ScrapeConfig, settings, where)
    else:
        settings = load_yaml(args.config) if args.config else {}
        given = set(settings)
        config = from_mapping(TrainConfig, settings, args.config or "defaults")
    source = args.config or "no config file: the built-in defaults"
    print(f"# magnb {args.which}: the settings {source} gives, every key written out")
    print(effective_yaml(config, given), end="")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    import pandas as pd

    from magnb.dataset import merge_shards

    path = merge_shards(args.data, args.shards, args.out)
    print(f"merge: {args.shards} shards joined into {path}")
    table = pd.read_parquet(path.with_name("table.parquet"))
    if not (table["status"] == "ok").any():
        raise nothing_usable(
            "merge",
            "calculations",
            table["reason"].astype(str).tolist(),
            verb="skipped",
            listed=f"column 'reason' of {path.with_name('table.parquet')}",
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from magnb.config import load_train_config
    from magnb.train import check_dataset, cross_validate, train

    overrides = {}
    if args.force:
        overrides["force"] = True
    config = load_train_config(args.config, **overrides)
    check_dataset(config)  # before TensorFlow is imported: a wrong path fails in a second
    result = cross_validate(config) if args.cv else train(config)
    print(result.summary())
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from magnb.train import list_runs

    runs = list_runs(args.runs)
    if runs.empty:
        print(f"no finished runs in {args.runs}")
    else:
        print(runs.to_string(index=False))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import pandas as pd

    from magnb.explain import per_class, shell_table

    table = shell_table(
        args.run_dir,
        calc_ids=args.calc_id or None,
        split=args.split,
        steps=args.steps,
        occlusion=not args.no_occlusion,
        progress=True,
    )
    cols = [c for c in ("calc_id", "true", "predicted", "probability", "residual", "region", "ig",
                        "ig_share", "occlusion", "occlusion_share") if c in table]  # fmt: skip
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[cols].round(4).to_string(index=False))
        if not args.calc_id:
            print()
            print(per_class(table).round(4).to_string(index=False))
    return 0


def cmd_run_id(args: argparse.Namespace) -> int:
    from magnb.config import dataset_identity, load_train_config

    config = load_train_config(args.config)
    print(config.run_id)
    if dataset_identity(config.dataset_dir) is None:
        print(
            f"magnb run-id: note: no dataset in {config.dataset_dir} yet; the id covers the "
            "dataset and will change once stage 03 has built it",
            file=sys.stderr,
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from magnb.baselines import format_table
    from magnb.config import TrainConfig, from_mapping, load_train_config, to_mapping
    from magnb.synth import SynthConfig, write_demo_tree
    from magnb.train import list_runs, trained_on_other_data

    out = Path(args.out).resolve()
    source = out / "vasp"
    data = out / "data"
    executed = out / "notebooks"
    config = SynthConfig.demo(*([args.compounds] if args.compounds else []))
    folders = write_demo_tree(source, config)
    print(f"demo: {len(folders)} generated calculations in {source} (synthetic demo data, not DFT)")
    runs = out / "runs"
    # the demo trains configs/default.yaml, passed whole so the run is exactly that config
    train_params = {
        **to_mapping(load_train_config(CONFIGS / "default.yaml")),
        "dataset_dir": str(data),
        "runs_dir": str(runs),
    }
    steps = [
        ("01_collect.ipynb", {"source_dir": str(source), "data_dir": str(data)}),
        ("02_split.ipynb", {"data_dir": str(data)}),
        ("03_scrape.ipynb", {"data_dir": str(data)}),
        ("04_train.ipynb", train_params),
        ("05_visualize.ipynb", {"runs_dir": str(runs), "save_pictures": True}),
    ]
    for name, params in steps:
        if name == "04_train.ipynb" and trained_on_other_data(from_mapping(TrainConfig, params)):
            print("demo: the data changed since the demo's last training run; retraining it")
            params = {**params, "force": True}
        print(f"demo: running {name}")
        notebook = run_notebook(name, executed, params)
        if name == "04_train.ipynb":  # the executed notebook belongs with the run it made
            run_id = from_mapping(TrainConfig, params).run_id
            shutil.copyfile(notebook, runs / run_id / name)

    print(f"demo: done; executed notebooks in {executed}, data in {data}, runs in {runs}")
    metrics = json.loads((runs / run_id / "metrics.json").read_text())
    print(f"\n{run_id}: {metrics['label']} on the test split")
    print(format_table(metrics["test"]))
    if not list_runs(runs).empty:
        print(f"\nrun registry: magnb runs {runs}")
    return 0


# --- Slurm (magnb.slurm): submit and doctor ------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from magnb.slurm import find_job_scripts, shell_text, submit, submit_commands

    scripts = find_job_scripts()
    commands = submit_commands(
        args.config,
        gpus=args.gpus,
        nodes=args.nodes,
        array=args.array,
        time_limit=args.time,
        partition=args.partition,
        data=args.data,
        shards=args.shards,
        out=args.out,
        sbatch_args=shlex.split(args.sbatch),
        scripts=scripts,
    )
    print(f"# job scripts from {scripts.source}")
    if args.dry_run:
        print(shell_text(commands, scripts.env))
    else:
        submit(commands, env=scripts.env)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from magnb.slurm import doctor

    return doctor(steps=args.steps, require_gpu=args.require_gpu)


def _add_slurm_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit",
        formatter_class=DefaultsHelpFormatter,
        help="submit a training config, sweep or sharded scrape to Slurm",
        description="Compose the sbatch call(s) for CONFIG and run them (--dry-run: print them). "
        "A training config runs slurm/train.sbatch, or train_2gpu_supercell.sbatch for "
        "`strategy: mirrored` (2 GPUs), or train_multinode.sbatch for `strategy: multiworker` "
        "(--nodes M); a sweep file (sweep: or configs:) slurm/sweep.sbatch as a job array; a "
        "scrape config (with --data and --shards) slurm/scrape_array.sbatch and the merge after "
        "it. The scripts come from the checkout named by MAGNB_ROOT, else the current directory "
        "if it is a checkout, else the copies installed with magnb; the first line says which.",
    )
    p.add_argument("config", help="training config, sweep file or scrape config (YAML)")
    p.add_argument(
        "--gpus",
        type=int,
        help="GPUs per node (--gres=gpu:N; 0: none; default: the job script's #SBATCH line)",
    )
    p.add_argument(
        "--nodes", type=int, help="nodes for one multi-worker training (default: 1, single node)"
    )
    p.add_argument(
        "--array", help="array spec for a sweep or scrape (default: all; %%k: k at once)"
    )
    p.add_argument("--time", help="time limit (sbatch --time; default: the job script's)")
    p.add_argument("--partition", help="partition (sbatch --partition; default: the cluster's)")
    p.add_argument(
        "--data", help="scrape: the data folder with split/ (default: the config's data_dir)"
    )
    p.add_argument(
        "--shards",
        type=int,
        help="scrape: number of shards, array tasks (no default: needed for a scrape)",
    )
    p.add_argument(
        "--out", help="scrape: folder for the shards and the merged dataset (default: DATA)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the sbatch call(s), submit nothing"
    )
    p.add_argument(
        "--sbatch",
        default="",
        metavar="OPTIONS",
        help='more sbatch options, as one string: --sbatch="--account=abc --qos=long"',
    )
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "doctor",
        help="versions, devices, a tiny training on each device",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=5, help="training steps per device")
    p.add_argument("--require-gpu", action="store_true", help="fail when no GPU is visible")
    p.set_defaults(func=cmd_doctor)


# --- end Slurm ------------------------------------------------------------------------------


def _scrape_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="magnb data folder (with split/)")
    p.add_argument(
        "--config",
        help="YAML file of ScrapeConfig settings (default: none, the built-in defaults of "
        "docs/config.md; configs/scrape_bulk.yaml for bulk crystals)",
    )
    p.add_argument(
        "--workers", type=int, help="processes, 0: one per core (default: the config's, 0)"
    )
    p.add_argument("--shard", help="build shard i of n (i/n), for Slurm job arrays (default: all)")
    p.add_argument("--out", help="folder for dataset.h5 and table.parquet (default: DATA)")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that appends ``(default: X)`` to every option's help (``off`` for a
    flag), except where the help already says what the default is; an option whose default is
    None must say in its help what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magnb",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[-1],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--tf-log",
        action="store_true",
        help="show TensorFlow's own log lines (default: off; MAGNB_TF_LOG=1 does the same)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(sub.add_parser, formatter_class=DefaultsHelpFormatter)

    p = add("synth", help="write the generated demo calculation tree")
    p.add_argument("out", help="folder to write the tree into")
    p.add_argument(
        "--compounds",
        type=int,
        default=0,
        help="number of compounds, 4 orders each (default 0: 24)",
    )
    p.set_defaults(func=cmd_synth)

    p = add("collect", help="stage 01: gather VASP runs into a data folder")
    p.add_argument("source", help="root of the VASP calculation tree (read only)")
    p.add_argument("data", help="magnb data folder")
    p.add_argument(
        "--layout",
        default="{formula}/{run}/CHGCAR*",
        help="where the CHGCARs sit, relative to SOURCE ({formula}, {run}, *, **); the seed "
        "project's tree is {formula}/spin_so/CHGCAR",
    )
    p.add_argument(
        "--mode", choices=["copy", "hardlink"], default="copy", help="how files are brought in"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-hash every file (otherwise only files whose size, mtime, ctime or inode changed)",
    )
    p.set_defaults(func=cmd_collect)

    p = add("split", help="stage 02: total and magnetization densities to HDF5")
    p.add_argument("data", help="magnb data folder (with manifest.parquet)")
    p.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    p.add_argument("--chgcar", action="store_true", help="also export CHGCARs for VESTA")
    p.set_defaults(func=cmd_split)

    p = add("scrape", help="stage 03: fixed-shape samples and labels")
    _scrape_arguments(p)
    p.set_defaults(func=cmd_scrape)

    p = add(
        "config",
        help="print the effective config (defaults filled in), or the reference",
        description="Print the settings a config file gives, every key written out and those "
        "left to their defaults marked; `magnb config reference` prints docs/config.md.",
    )
    p.add_argument("which", choices=["scrape", "train", "reference"], help="which config")
    p.add_argument("--config", help="YAML file (default: none, the built-in defaults)")
    p.add_argument("--data", default="DATA", help="scrape: the data folder")
    p.add_argument("--out", help="scrape: as magnb scrape --out (default: none, DATA)")
    p.set_defaults(func=cmd_config)

    p = add("merge", help="join the shards of a sharded scrape")
    p.add_argument("data", help="magnb data folder")
    p.add_argument("--shards", type=int, required=True, help="number of shards (no default)")
    p.add_argument("--out", help="folder holding the shards (default: DATA)")
    p.set_defaults(func=cmd_merge)

    p = add("train", help="stage 04: train and evaluate from a config")
    p.add_argument("config", help="YAML file of TrainConfig settings")
    p.add_argument(
        "--force", action="store_true", help="retrain a finished run, or one of other data"
    )
    p.add_argument(
        "--cv",
        action="store_true",
        help="k-fold cross-validation over the dataset's fold column instead: model and "
        "baselines, mean and spread over the folds (writes RUNS/<run_id>-cv/cv.json)",
    )
    p.set_defaults(func=cmd_train)

    p = add("runs", help="the run registry as a table")
    p.add_argument("runs", nargs="?", default="runs", help="runs folder")
    p.set_defaults(func=cmd_runs)

    p = add("explain", help="what a run's decisions rest on: the shell table (magnb.explain)")
    p.add_argument("run_dir", help="a finished run folder")
    p.add_argument("--calc-id", action="append", help="a sample (repeat; default: the split)")
    p.add_argument("--split", default="test", help="samples to explain without --calc-id")
    p.add_argument("--steps", type=int, default=16, help="integrated-gradient steps")
    p.add_argument("--no-occlusion", action="store_true", help="gradients only")
    p.set_defaults(func=cmd_explain)

    p = add("run-id", help="print the run folder a config trains into (config + dataset hash)")
    p.add_argument("config", help="YAML file of TrainConfig settings")
    p.set_defaults(func=cmd_run_id)

    p = add("demo", help="the main job on generated demo data")
    p.add_argument("--out", default="demo", help="output folder")
    p.add_argument(
        "--compounds",
        type=int,
        default=0,
        help="number of compounds, 4 orders each (default 0: 24)",
    )
    p.set_defaults(func=cmd_demo)

    _add_slurm_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tf_log:  # before anything imports TensorFlow
        os.environ["MAGNB_TF_LOG"] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    try:
        return args.func(args)
    except NothingUsableError as exc:
        print(f"magnb: error: {exc}", file=sys.stderr)
        return EXIT_NOTHING_USABLE
    except MagnbError as exc:
        print(f"magnb: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a permission, ... where no stage said it better
        from magnb._io import os_error

        converted = os_error(exc)
        if converted is exc:
            raise
        print(f"magnb: error: {converted}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
