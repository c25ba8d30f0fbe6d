"""magnb: learn magnetism from spin-polarized VASP charge densities.

Stages (one module each): collect -> split -> scrape (dataset) -> train -> visualize.
"""

import os

# TensorFlow's C++ start-up chatter drowns the output of short commands; users can still lower it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from magnb.errors import MagnbError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MagnbError", "__version__"]
