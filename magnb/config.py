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
from collections.abc import Mapping
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


def to_mapping(obj: Any) -> dict[str, Any]:
    """A dataclass as plain YAML-safe values (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs: the dataset, the model, the fit, the distribution.

    Load it with :func:`load_train_config` (YAML) or :func:`train_config_from_notebook`
    (papermill parameters); unknown keys and wrong types are errors. Relative paths are taken
    from the working directory of the process that trains.
    """

    dataset_dir: Path = Path("demo/data")  #: folder with dataset.h5 and table.parquet
    runs_dir: Path = Path("runs")
    name: str = "default"  #: run folder is runs_dir/<name>-<hash of config and dataset>
    label: Literal[
        "order", "order_pattern", "moment_class", "moment", "moment_per_magnetic_atom"
    ] = "order"
    channels: tuple[str, ...] | None = None  #: if given, must equal the dataset's channels
    model: Literal["default", "seed_base"] = "default"
    filters: tuple[int, ...] = (8, 16)
    kernel_size: tuple[int, ...] = (7, 5)
    pool: tuple[int, ...] = (2, 2)
    dense: tuple[int, ...] = (32,)
    dropout: float = 0.2
    activation: str = "relu"
    epochs: int = 20
    batch_size: int = 8  #: per replica; the global batch is this times the replica count
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = 1e-3
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    early_stopping: int = 0  #: patience in epochs on val_loss; 0 switches it off
    class_weight: Literal["none", "balanced"] = "balanced"
    augment: bool = True  #: random whole-voxel periodic translations of training samples
    seed: int = 0
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
        if self.early_stopping < 0 or self.cpu_replicas < 0 or self.workers < 0:
            raise ConfigError("early_stopping, cpu_replicas and workers must be >= 0")

    def content_hash(self) -> str:
        """Hash of the settings that change what is trained (not paths, workers or force)."""
        import hashlib
        import json

        d = to_mapping(self)
        for k in ("dataset_dir", "runs_dir", "workers", "force"):
            d.pop(k)
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
