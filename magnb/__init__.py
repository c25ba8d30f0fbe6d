"""magnb: learn magnetism from spin-polarized VASP charge densities.

Stages (one module each): collect -> split -> scrape (dataset) -> train -> visualize.
"""

from magnb.errors import MagnbError

__version__ = "0.1.0"
__all__ = ["MagnbError", "__version__"]
