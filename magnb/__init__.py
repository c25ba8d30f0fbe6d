"""magnb: learn magnetism from spin-polarized VASP charge densities.

Stages (one module each): collect -> split -> scrape (dataset) -> train -> visualize.
"""

import os

# TensorFlow's C++ start-up chatter drowns the output of short commands and fills a red stderr box
# in every notebook: off unless MAGNB_TF_LOG=1 (or ``magnb --tf-log``) asks for it. An explicit
# TF_CPP_MIN_LOG_LEVEL is left as the user set it. This runs before anything imports TensorFlow
# (each notebook's first cell, every job and the CLI import magnb first).
if os.environ.get("MAGNB_TF_LOG", "0").strip().lower() in ("", "0", "false", "no"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
# TensorFlow turns on its oneDNN custom operations only on CPUs with AVX512_VNNI and the like (not
# on most AMD ones), which reorders floating-point sums, and announces it on every import whatever
# TF_CPP_MIN_LOG_LEVEL says. Off unless the user set it: the same numbers on every x86 CPU.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from magnb.errors import MagnbError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MagnbError", "__version__"]
