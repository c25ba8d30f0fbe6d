"""The ``magnb`` command: the same functions the notebooks call, from the shell.

magnb synth  OUT                 write the generated demo calculation tree
magnb collect SOURCE DATA        stage 01
magnb split DATA                 stage 02
magnb demo [--out demo]          the main job on the demo data: synth, then notebooks in order
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from magnb.errors import MagnbError

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
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

    config = SynthConfig(**({"n_compounds": args.compounds} if args.compounds else {}))
    folders = write_demo_tree(Path(args.out), config)
    print(f"synth: wrote {len(folders)} generated demo calculations under {args.out}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from magnb.collect import CollectConfig, collect

    result = collect(
        CollectConfig(source=args.source, data_dir=args.data, layout=args.layout, mode=args.mode)
    )
    print(result.summary())
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from magnb.split import SplitConfig, split_all

    result = split_all(
        SplitConfig(data_dir=args.data, workers=args.workers, export_chgcar=args.chgcar)
    )
    print(result.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from magnb.synth import SynthConfig, write_demo_tree

    out = Path(args.out).resolve()
    source = out / "vasp"
    data = out / "data"
    executed = out / "notebooks"
    config = SynthConfig(**({"n_compounds": args.compounds} if args.compounds else {}))
    folders = write_demo_tree(source, config)
    print(f"demo: {len(folders)} generated calculations in {source} (synthetic demo data, not DFT)")
    steps = [
        ("01_collect.ipynb", {"source_dir": str(source), "data_dir": str(data)}),
        ("02_split.ipynb", {"data_dir": str(data)}),
    ]
    for name, params in steps:
        print(f"demo: running {name}")
        run_notebook(name, executed, params)
    print(f"demo: done; executed notebooks in {executed}, data in {data}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magnb", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write the generated demo calculation tree")
    p.add_argument("out", help="folder to write the tree into")
    p.add_argument("--compounds", type=int, default=0, help="number of compounds (default: all)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("collect", help="stage 01: gather VASP runs into a data folder")
    p.add_argument("source", help="root of the VASP calculation tree (read only)")
    p.add_argument("data", help="magnb data folder")
    p.add_argument("--layout", default="{formula}/{run}/CHGCAR*", help="layout pattern")
    p.add_argument("--mode", choices=["copy", "hardlink"], default="copy")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("split", help="stage 02: total and magnetization densities to HDF5")
    p.add_argument("data", help="magnb data folder (with manifest.parquet)")
    p.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    p.add_argument("--chgcar", action="store_true", help="also export CHGCARs for VESTA")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("demo", help="the main job on generated demo data")
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument("--compounds", type=int, default=0, help="number of compounds (default: all)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MagnbError as exc:
        print(f"magnb: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
