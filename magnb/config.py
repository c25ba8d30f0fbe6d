"""Typed configuration objects from YAML files or plain mappings (papermill parameters).

Every stage's settings are a frozen dataclass. :func:`from_mapping` builds one from a dict,
refusing unknown keys and values of the wrong type with a :class:`MagnbError` that names the file
(or "parameters") and the key, so a typo in a config fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from magnb.errors import ConfigError, MagnbError

T = TypeVar("T")

#: element-wise Keras activations a model can use between layers (``keras.activations``)
ACTIVATIONS = (
    "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu", "relu6",
    "selu", "sigmoid", "silu", "soft_shrink", "softplus", "softsign", "sparse_plus",
    "sparse_sigmoid", "squareplus", "swish", "tanh", "tanh_shrink",
)  # fmt: skip
#: a config file larger than this is not a config (a wrong path, a data file)
MAX_CONFIG_BYTES = 1 << 20


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check(value: Any, annotation: Any, key: str, where: str) -> Any:
    """Coerce ``value`` to ``annotation`` where that is lossless (list -> tuple, int -> float,
    str -> Path), else raise MagnbError."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _check(value, option, key, where)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{key} = {_short(value)} is not {_describe(annotation)}", where)
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key} = {_short(value)} is not None", where)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key} = {_short(value)} must be one of {list(args)}", where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} = {_short(value)} must be a list", where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} = {_short(value)} must have {len(args)} entries", where)
        return tuple(
            _check(v, a, f"{key}[{i}]", where)
            for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping", where)
        return dict(value)
    if annotation is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"{key} = {_short(value)} must be a path", where)
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} = {value} must be a finite number", where)
            return float(value)
        raise ConfigError(f"{key} = {_short(value)} must be a number", where)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} = {_short(value)} must be an integer", where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} = {_short(value)} must be true or false", where)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} = {_short(value)} must be a string", where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping", where)
        return from_mapping(annotation, value, where, prefix=f"{key}.")
    return value


def _describe(annotation: Any) -> str:
    return str(annotation).replace("typing.", "")


def from_mapping(
    cls: type[T], mapping: Mapping[str, Any], where: str = "parameters", prefix: str = ""
) -> T:
    """Build dataclass ``cls`` from ``mapping``; unknown keys and wrong types are MagnbErrors."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"expected a mapping of settings, got {type(mapping).__name__}", where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(fields))}",
            where,
        )
    values = {}
    for name, value in mapping.items():
        values[name] = _check(value, hints[name], prefix + name, where)
    missing = [
        n
        for n, f in fields.items()
        if n not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"missing required key(s) {', '.join(prefix + m for m in missing)}", where
        )
    try:
        return cls(**values)
    except MagnbError as exc:  # a check in the dataclass itself: say which file it was
        if exc.path is None:
            raise ConfigError(exc.reason, where) from exc
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), where) from exc


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses what a config never needs and a mistake often makes:
    aliases (``*ref``: a 400-byte file of nested aliases expands to gigabytes) and a key given
    twice in one mapping (PyYAML keeps the last one silently)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed in a config",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(
                    None, None, "a config key must be a plain value", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_short(key)} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file, with one-line MagnbErrors (ConfigError) for a missing or
    unreadable file, a file that is not UTF-8 text, bad YAML, aliases, duplicate keys, or a
    document that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config ({exc.strerror})", path) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{len(raw)} bytes is not a config file (a wrong path?)", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}): a binary file?", path
        ) from exc
    if "\x00" in text:
        raise ConfigError("contains NUL bytes: a binary file, not a YAML config", path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", path, line) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the config must be a mapping of key: value, not a {type(data).__name__}", path
        )
    return data


# --------------------------------------------------------------------------------------------
# the reference: every key, its type, default and meaning, from the dataclasses themselves


def field_docs(cls: type) -> dict[str, str]:
    """The one-line meaning of each field of dataclass ``cls``: the ``#:`` comment on the field's
    line (or on the line above it), Sphinx's convention for attribute docs; '' where there is none.
    """
    import ast
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    (node,) = ast.parse(source).body
    docs: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        text = ""
        for line in lines[stmt.lineno - 1 : stmt.end_lineno]:
            if "#:" in line:
                text = line.split("#:", 1)[1].strip()
        above: list[str] = []  # a block of #: lines right above the field
        i = stmt.lineno - 2
        while not text and i >= 0 and lines[i].strip().startswith("#:"):
            above.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        docs[stmt.target.id] = text or " ".join(above)
    return docs


def type_text(annotation: Any) -> str:
    """A field's type in words, as a YAML file gives it (``tuple[int, int, int]`` is "3 integers")."""
    origin, args = get_origin(annotation), get_args(annotation)
    names = {Path: "path", float: "number", int: "integer", bool: "true/false", str: "string"}
    plural = {Path: "paths", float: "numbers", int: "integers", bool: "true/false", str: "strings"}
    if annotation in names:
        return names[annotation]
    if annotation is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {plural.get(args[0], type_text(args[0]))}"
        if len(set(args)) == 1:
            return f"{len(args)} {plural.get(args[0], type_text(args[0]))}"
        return "list of " + ", ".join(type_text(a) for a in args)
    if origin is dict:
        return "mapping"
    return _describe(annotation)


def _default_text(f: dataclasses.Field) -> str:
    import json

    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return json.dumps(to_mapping_value(value))  # JSON is YAML: what a config file would say


def config_classes() -> dict[str, type]:
    """The settings a YAML file can give, by the name ``magnb config NAME`` takes."""
    from magnb.dataset import ScrapeConfig

    return {"scrape": ScrapeConfig, "train": TrainConfig}


def reference_table(cls: type) -> str:
    """A markdown table of every field of ``cls``: key, type, default, meaning."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        cells = [f"`{f.name}`", type_text(hints[f.name]), f"`{_default_text(f)}`", docs[f.name]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


REFERENCE_HEAD = """# Configuration reference

Generated from the config dataclasses by `magnb config reference > docs/config.md`; a test checks
that this page matches the code. Every key of a YAML config is a field below; unknown keys and
values of the wrong type are errors. A key a file leaves out takes the default shown here, and so
does `magnb scrape` without `--config`. `magnb config scrape|train [--config FILE]` prints the
settings a file gives, defaults filled in. Lists are YAML lists (`grid: [32, 32, 32]`); `null` is
YAML's none. Relative paths are taken from the working directory of the process that reads them.
"""

REFERENCE_SECTIONS = {
    "scrape": (
        "## scrape: `magnb scrape DATA --config FILE` (stage 03, `ScrapeConfig`)",
        "Shipped: `configs/scrape.yaml` (the demo's slabs: fractional grid, c cropped to a 12 A "
        "window), `configs/scrape_supercell.yaml` (the seed project's 2 x 2 supercells) and "
        "`configs/scrape_bulk.yaml` (bulk crystals of any lattice as Cartesian cubes at one voxel "
        "size). `data_dir`, `out_dir`, `workers` and `shard` come from the command line "
        "(`DATA`, `--out`, `--workers`, `--shard`).",
    ),
    "train": (
        "## train: `magnb train FILE` (stage 04, `TrainConfig`)",
        "Shipped: `configs/default.yaml` (the demo's spin-pattern task) and "
        "`configs/supercell_2gpu.yaml` (the seed's 2-GPU supercell run). The notebook "
        "`04_train.ipynb` takes the same keys as papermill parameters (`papermill -f FILE`).",
    ),
}


def reference_markdown() -> str:
    """The whole configuration reference (docs/config.md)."""
    parts = [REFERENCE_HEAD]
    for name, cls in config_classes().items():
        title, text = REFERENCE_SECTIONS[name]
        parts += [title, "", text, "", reference_table(cls), ""]
    return "\n".join(parts)


def effective_yaml(config: Any, given: Iterable[str] = ()) -> str:
    """A config object as the YAML file that gives it, every key written out: keys not in
    ``given`` (those a file left to their defaults) are marked ``# default``, and each line ends
    with the key's meaning. :func:`from_mapping` reads the text back to an equal object."""
    import yaml

    given = set(given)
    docs = field_docs(type(config))
    values = to_mapping(config)
    lines = []
    for f in dataclasses.fields(config):
        text = yaml.safe_dump(values[f.name], default_flow_style=True, width=200)
        text = text.removesuffix("\n...\n").strip()
        comment = "; ".join(x for x in ("" if f.name in given else "default", docs[f.name]) if x)
        lines.append(f"{f.name}: {text}  # {comment}")
    return "\n".join(lines) + "\n"


def to_mapping_value(v: Any) -> Any:
    """One value as plain YAML-safe data (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: to_mapping_value(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple | list):
        return [to_mapping_value(x) for x in v]
    if isinstance(v, dict):
        return {k: to_mapping_value(x) for k, x in v.items()}
    return v


def to_mapping(obj: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-safe values (paths as strings, tuples as lists)."""
    return to_mapping_value(obj)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs: the dataset, the model, the fit, the distribution.

    Load it with :func:`load_train_config` (YAML) or :func:`train_config_from_notebook`
    (papermill parameters); unknown keys and wrong types are errors. Relative paths are taken
    from the working directory of the process that trains.
    """

    dataset_dir: Path = Path("demo/data")  #: folder with dataset.h5 and table.parquet
    runs_dir: Path = Path("runs")  #: folder of the run folders
    name: str = "default"  #: run folder is runs_dir/<name>-<hash of config and dataset>
    #: what to predict: order (FM/AFM), order_pattern, moment_class, or a regression of moment
    label: Literal[
        "order", "order_pattern", "moment_class", "moment", "moment_per_magnetic_atom"
    ] = "order"
    channels: tuple[str, ...] | None = None  #: if given, must equal the dataset's channels
    #: the network (magnb.model); seed_base is fixed and ignores filters to dropout
    model: Literal["default", "seed_base"] = "default"
    filters: tuple[int, ...] = (8, 16)  #: filters of each periodic conv block
    kernel_size: tuple[int, ...] = (7, 5)  #: kernel edge in voxels of each conv block
    pool: tuple[int, ...] = (2, 2)  #: max-pool size after each conv block (1: none)
    dense: tuple[int, ...] = (32,)  #: units of the dense layers before the output
    dropout: float = 0.2  #: dropout after each dense layer, in [0, 1)
    activation: str = "relu"  #: Keras activation of the hidden layers
    #: Laplacian penalty on the first conv layer's kernels (magnb.layers.LaplacianSmoothness); 0: none
    kernel_smoothness: float = 0.0
    epochs: int = 20  #: training epochs
    batch_size: int = 8  #: per replica; the global batch is this times the replica count
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  #: sgd has momentum 0.9
    learning_rate: float = 1e-3  #: initial learning rate
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"  #: plateau halves it
    early_stopping: int = 0  #: patience in epochs on val_loss; 0 switches it off
    class_weight: Literal["none", "balanced"] = "balanced"  #: balanced: rare classes weigh more
    augment: bool = True  #: random whole-voxel periodic translations of training samples
    #: turn each training cube by one of its crystal's own operations (needs scrape symmetry: true)
    augment_symmetry: bool = False
    seed: int = 0  #: seeds weights, shuffling and augmentation
    #: tf.distribute strategy; auto: mirrored over several GPUs, else one device
    strategy: Literal["auto", "default", "mirrored", "multiworker"] = "auto"
    cpu_replicas: int = 0  #: with no GPU, split the CPU into this many logical devices
    workers: int = 1  #: PyDataset reader threads
    force: bool = False  #: retrain even if the run folder holds finished metrics

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset_dir", Path(self.dataset_dir))
        object.__setattr__(self, "runs_dir", Path(self.runs_dir))
        for name in ("filters", "kernel_size", "pool", "dense"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(self.channels))
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, not {self.learning_rate}")
        if any(v < 1 for v in (*self.filters, *self.kernel_size, *self.pool, *self.dense)):
            raise ConfigError("filters, kernel_size, pool and dense entries must be >= 1")
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"name {_short(self.name)} must be letters, digits, '-', '_' or '.'")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation {_short(self.activation)} is not one of Keras' element-wise "
                f"activations: {', '.join(ACTIVATIONS)}"
            )
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2**32), not {self.seed}")
        if not self.kernel_smoothness >= 0:  # NaN too
            raise ConfigError(f"kernel_smoothness must be >= 0, not {self.kernel_smoothness}")
        if self.early_stopping < 0 or self.cpu_replicas < 0 or self.workers < 0:
            raise ConfigError("early_stopping, cpu_replicas and workers must be >= 0")

    def content_hash(self) -> str:
        """Hash of the settings that change what is trained (not paths, workers or force)."""
        import hashlib
        import json

        d = to_mapping(self)
        for k in ("dataset_dir", "runs_dir", "workers", "force"):
            d.pop(k)
        if d["kernel_smoothness"] == 0:  # runs from before the option keep their ids
            d.pop("kernel_smoothness")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def run_id_for(self, dataset_hash: str | None) -> str:
        """``<name>-<10 hex digits>``: a hash of :meth:`content_hash` and ``dataset_hash`` (the
        dataset's identity, :func:`dataset_identity`; None: no dataset built yet)."""
        import hashlib

        payload = f"{self.content_hash()}|dataset:{dataset_hash or 'none'}"
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"

    @property
    def run_id(self) -> str:
        """The run folder's name: the config's settings and the identity of the dataset now in
        ``dataset_dir`` (its input hash), so the same config on two datasets, or on a rebuilt
        one, trains into two folders, and two folders holding one dataset (a copy) share one.
        Before the dataset is built the id is computed without it and changes once it exists."""
        return self.run_id_for(dataset_identity(self.dataset_dir))


def dataset_identity(dataset_dir: str | Path) -> str | None:
    """The identity of the dataset in ``dataset_dir``: the input hash stage 03 keeps in
    ``dataset.h5``'s attributes (a hash of its scrape settings and of every calculation's
    inputs; the splits follow from them), or None when no dataset is there. Reads one attribute:
    no TensorFlow, no samples."""
    from magnb._io import h5_attr

    return h5_attr(Path(dataset_dir) / "dataset.h5", "input_hash") or None


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """A TrainConfig from a YAML file (plus keyword overrides)."""
    data = load_yaml(path)
    data.update(overrides)
    return from_mapping(TrainConfig, data, str(path))


def train_config_from_notebook(namespace: Mapping[str, Any], before: set[str]) -> TrainConfig:
    """A TrainConfig from a notebook's globals after papermill injected its parameters.

    ``before`` holds the names that existed at the end of the ``parameters`` cell: a name that
    papermill added beyond them is a key TrainConfig does not know, and an error.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    plain = (str, int, float, bool, list, dict, tuple, type(None))  # what papermill can inject
    injected = {
        k
        for k, v in namespace.items()
        if k not in before and not k.startswith("_") and isinstance(v, plain)
    }
    unknown = sorted(injected - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}", "notebook parameters")
    values = {k: namespace[k] for k in names if k in namespace}
    return from_mapping(TrainConfig, values, "notebook parameters")
