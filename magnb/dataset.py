"""Stage 03 under its old name: the public names of :mod:`magnb.labels` (label table and
splits), :mod:`magnb.store` (the sample store: ``scrape``, ``merge_shards``) and
:mod:`magnb.loader` (``DensityDataset``), so that code written against ``magnb.dataset`` keeps
working. New code imports from those modules. ``DensityDataset`` is imported on first use
(it imports Keras, which a scrape does not need).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magnb.labels import (
    LABEL_CLASSES,
    LABEL_HINTS,
    LABELS,
    ORDER_PATTERNS,
    ORDERS,
    assign_splits,
    encode_labels,
    grouped_stratified_folds,
    label_rows,
    label_table,
    order_from_run,
    order_pattern_from_run,
)
from magnb.store import (
    BASE_FIELDS,
    CHANNEL_UNITS,
    CHANNELS,
    CODECS,
    DATASET_FORMAT,
    ScrapeConfig,
    ScrapeResult,
    channel_arrays,
    check_channels,
    dataset_paths,
    describe_geometry,
    make_sample,
    merge_shards,
    normalization_stats,
    prepared_table,
    read_table,
    replace_table,
    scrape,
    split_file_path,
)

if TYPE_CHECKING:
    from magnb.loader import DensityDataset

__all__ = [
    "BASE_FIELDS",
    "CHANNELS",
    "CHANNEL_UNITS",
    "CODECS",
    "DATASET_FORMAT",
    "LABELS",
    "LABEL_CLASSES",
    "LABEL_HINTS",
    "ORDERS",
    "ORDER_PATTERNS",
    "DensityDataset",
    "ScrapeConfig",
    "describe_geometry",
    "replace_table",
    "split_file_path",
    "ScrapeResult",
    "assign_splits",
    "channel_arrays",
    "check_channels",
    "dataset_paths",
    "encode_labels",
    "grouped_stratified_folds",
    "label_rows",
    "label_table",
    "make_sample",
    "merge_shards",
    "normalization_stats",
    "order_from_run",
    "order_pattern_from_run",
    "prepared_table",
    "read_table",
    "scrape",
]


def __getattr__(name: str) -> Any:
    if name == "DensityDataset":
        from magnb.loader import DensityDataset

        return DensityDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
