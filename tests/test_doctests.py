"""The short examples in the docstrings of the pure functions run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "magnb.errors",
        "magnb.grid",
        "magnb.store",
        "magnb.collect",
        "magnb.symmetry",
        "magnb.explain",
    ],
)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
