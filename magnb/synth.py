"""Generated demo data: a VASP-format calculation tree of A2B2X6 magnetic monolayers.

**This is generated demo data, not DFT.** Nothing here solves the Kohn-Sham equations. The files
look like the output of spin-polarized VASP runs (``POSCAR``, ``INCAR``, ``CHGCAR`` with a total
and a magnetization block and their augmentation occupancies, ``OUTCAR``, ``OSZICAR``) so that
every stage of magnb can run end to end where no real data can be downloaded. POSCAR, INCAR,
CHGCAR and OUTCAR say so in their first line, and ``<root>/README.txt`` says so for the tree.
``make_calculation(..., spin_axis=...)`` makes a non-collinear run instead (``LNONCOLLINEAR``; CHGCAR
blocks total, mx, my, mz; OUTCAR tables ``magnetization (x)``, ``(y)``, ``(z)``): the tests'
fixture with distinct, non-zero components.
Densities are sums of model atomic shells, moments come from a small table of nominal spins with
seeded variation, and energies from a toy exchange model.

The tree is ``<root>/<formula>/<order>/``. Compounds are CrSiTe3/CrGeTe3/MnPS3-like monolayers
``A2B2X6``: a honeycomb of A in {V, Cr, Mn, Fe, Co, Ni} (one or two species, one per honeycomb
sublattice), a B2 dimer (B in {Si, Ge, P}) through the centre of each hexagon, perpendicular to the
layer, and six X in {S, Se, Te} above and below the metal plane; vacuum along c, slab centred at
z = 1/2. Two cells:

- ``hexagonal`` (10 atoms, 2 A): orders ``FM`` (all A moments parallel) and ``AFM`` (Neel: the
  two honeycomb sublattices antiparallel);
- ``rectangular`` (20 atoms, 4 A, a x sqrt(3) a): also ``AFM-zigzag`` (ferromagnetic zigzag
  chains, antiparallel to each other) and ``AFM-stripe`` (parallel pairs across the chains,
  antiparallel along them); ``AFM-Neel`` is Neel. In one compound Neel, zigzag and stripe carry
  the same local moments, so which one a density shows is written in where the up and down
  moments sit, not in how much there is of each: a task for a model that sees space.

What holds exactly, so that tests and labels can rely on it:

- the magnetization block integrates (``data.sum() / data.size``, VASP stores ``rho * V_cell``)
  to the moment written in the OUTCAR ``number of electron ... magnetization`` line and in the
  OSZICAR ``mag=`` (moments are quantized to 1e-4 muB, so all three agree to the CHGCAR's
  11 significant digits);
- the total block integrates to the ``NELECT`` written in the OUTCAR;
- the OUTCAR ``magnetization (x)`` table lists the per-site moments the magnetization was built
  from (their sum differs from the total by the diffuse, interstitial part, as in VASP);
- the total density is positive and ``|m| <= rho`` everywhere (both spin densities are >= 0);
- the densities are periodic: every atom is summed over its periodic images;
- the same seed gives byte-identical files.

The physics is kept plausible so that a model trained on the demo learns something: A-site local
moments follow a high-spin d-electron count (A2+ with B = P, A3+ with B = Si, Ge) reduced by a
seeded covalency factor; the d-shell magnetization has the t2g/eg angular shape of that
configuration in the site's own octahedral frame; ligands carry a small induced moment opposite to
their A neighbours (which cancels in a Neel cell); insulating compounds have integer total
moments. A Neel cell with two different A species is a ferrimagnet with a nonzero net moment, so
"total moment == 0" does not classify the order by itself (zigzag and stripe cells compensate
each species and have none).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from magnb._io import atomic_write

__all__ = [
    "A_SPECIES",
    "B_SPECIES",
    "CELLS",
    "ORDERS",
    "ORDER_PATTERNS",
    "X_SPECIES",
    "CompoundSpec",
    "SynthCalculation",
    "SynthConfig",
    "all_compounds",
    "choose_compounds",
    "grid_for_cell",
    "make_calculation",
    "write_calculation",
    "write_demo_tree",
]

#: Marker written into the first line of every generated file.
DISCLAIMER = "magnb synthetic demo data, NOT a DFT calculation"

#: run tags the generator writes; "AFM" is the Neel order (the only AFM order of the hexagonal
#: cell). Tags keep their position here: it seeds each run's random numbers.
ORDERS = ("FM", "AFM", "AFM-Neel", "AFM-zigzag", "AFM-stripe")
#: the spin pattern each tag stands for
ORDER_PATTERNS = {
    "FM": "FM",
    "AFM": "Neel",
    "AFM-Neel": "Neel",
    "AFM-zigzag": "zigzag",
    "AFM-stripe": "stripe",
}
#: compounds in the demo tree (x 4 orders)
DEMO_COMPOUNDS = 24
#: cells the generator builds, and the orders each can hold
CELLS = {
    "hexagonal": ("FM", "AFM", "AFM-Neel"),
    "rectangular": ORDERS,
}
A_SPECIES = ("V", "Cr", "Mn", "Fe", "Co", "Ni")
B_SPECIES = ("Si", "Ge", "P")
X_SPECIES = ("S", "Se", "Te")

# --------------------------------------------------------------------------------------------
# species tables
#
# A shell is (electrons, peak radius in A, exponent m): the radial density is
# (r/rp)^m exp(-m (r/rp - 1)), Slater-like (m = 2 n* - 2), tapered smoothly to zero where it has
# fallen below 1e-5 of its peak.


@dataclass(frozen=True)
class _Species:
    symbol: str
    zval: float  #: valence electrons of the (PBE PAW) potential
    potcar: str  #: TITEL as an OUTCAR prints it
    mass: float
    rwigs: float  #: Wigner-Seitz radius (A) VASP would use for the site tables
    aug_count: int  #: values per augmentation-occupancy record
    shells: tuple[tuple[str, float, float, float], ...]  #: (name, electrons, rp, m); A: non-d
    rd: float = 0.0  #: A only: 3d peak radius
    ionic: dict[int, float] = field(default_factory=dict)  #: Shannon radius by oxidation state
    covalent: float = 0.0
    dimer: float = 0.0  #: B only: B-B bond length
    alpha: float = 0.0  #: X only: induced moment per muB of neighbouring A moment
    e_ref: float = 0.0  #: energy per atom of the element (eV), for the toy total energy


_A = {
    "V": _Species("V", 11.0, "PAW_PBE V_pv 07Sep2000", 50.942, 1.217, 138,
                  (("p", 6.0, 0.33, 4.0), ("s", 0.0, 0.95, 4.0)), rd=0.52,
                  ionic={2: 0.79, 3: 0.64}, e_ref=-9.08),
    "Cr": _Species("Cr", 12.0, "PAW_PBE Cr_pv 02Aug2007", 51.996, 1.323, 138,
                   (("p", 6.0, 0.31, 4.0), ("s", 0.0, 0.92, 4.0)), rd=0.49,
                   ionic={2: 0.80, 3: 0.615}, e_ref=-9.65),
    "Mn": _Species("Mn", 13.0, "PAW_PBE Mn_pv 02Aug2007", 54.938, 1.323, 138,
                   (("p", 6.0, 0.30, 4.0), ("s", 0.0, 0.90, 4.0)), rd=0.47,
                   ionic={2: 0.83, 3: 0.645}, e_ref=-9.16),
    "Fe": _Species("Fe", 14.0, "PAW_PBE Fe_pv 02Aug2007", 55.847, 1.302, 138,
                   (("p", 6.0, 0.29, 4.0), ("s", 0.0, 0.88, 4.0)), rd=0.45,
                   ionic={2: 0.78, 3: 0.645}, e_ref=-8.47),
    "Co": _Species("Co", 9.0, "PAW_PBE Co 06Sep2000", 58.933, 1.302, 138,
                   (("p", 0.0, 0.28, 4.0), ("s", 0.0, 0.86, 4.0)), rd=0.43,
                   ionic={2: 0.745, 3: 0.61}, e_ref=-7.11),
    "Ni": _Species("Ni", 16.0, "PAW_PBE Ni_pv 19Sep2006", 58.690, 1.286, 138,
                   (("p", 6.0, 0.27, 4.0), ("s", 0.0, 0.84, 4.0)), rd=0.41,
                   ionic={2: 0.69, 3: 0.60}, e_ref=-5.78),
}  # fmt: skip
_B = {
    "Si": _Species("Si", 4.0, "PAW_PBE Si 05Jan2001", 28.085, 1.312, 33,
                   (("s", 2.0, 0.60, 4.0), ("p", 2.0, 0.85, 4.0)),
                   covalent=1.11, dimer=2.30, e_ref=-5.42),
    "Ge": _Species("Ge", 14.0, "PAW_PBE Ge_d 06Sep2000", 72.610, 1.402, 33,
                   (("d", 10.0, 0.32, 4.0), ("s", 2.0, 0.65, 5.4), ("p", 2.0, 0.92, 5.4)),
                   covalent=1.20, dimer=2.45, e_ref=-4.62),
    "P": _Species("P", 5.0, "PAW_PBE P 06Sep2000", 30.974, 1.233, 33,
                  (("s", 2.0, 0.55, 4.0), ("p", 3.0, 0.78, 4.0)),
                  covalent=1.07, dimer=2.20, e_ref=-5.41),
}  # fmt: skip
_X = {
    "S": _Species("S", 6.0, "PAW_PBE S 06Sep2000", 32.066, 1.164, 33,
                  (("s", 2.0, 0.50, 4.0), ("p", 4.0, 0.72, 4.0)),
                  ionic={-2: 1.84}, covalent=1.05, alpha=0.008, e_ref=-4.13),
    "Se": _Species("Se", 6.0, "PAW_PBE Se 06Sep2000", 78.960, 1.270, 33,
                   (("s", 2.0, 0.58, 5.4), ("p", 4.0, 0.85, 5.4)),
                   ionic={-2: 1.98}, covalent=1.20, alpha=0.012, e_ref=-3.50),
    "Te": _Species("Te", 6.0, "PAW_PBE Te 08Apr2002", 127.600, 1.503, 33,
                   (("s", 2.0, 0.68, 6.4), ("p", 4.0, 1.00, 6.4)),
                   ionic={-2: 2.21}, covalent=1.38, alpha=0.017, e_ref=-3.14),
}  # fmt: skip
_ALL = {**_A, **_B, **_X}

# High-spin (or, for Co3+ and Ni3+, intermediate / low-spin) d configurations in an octahedron:
# (t2g up, t2g down, eg up, eg down). B = P makes A2+ (P2X6 4-), B = Si, Ge make A3+ (B2X6 6-).
_D_CONFIG = {
    2: {"V": (3, 0, 0, 0), "Cr": (3, 0, 1, 0), "Mn": (3, 0, 2, 0),
        "Fe": (3, 1, 2, 0), "Co": (3, 2, 2, 0), "Ni": (3, 3, 2, 0)},
    3: {"V": (2, 0, 0, 0), "Cr": (3, 0, 0, 0), "Mn": (3, 0, 1, 0),
        "Fe": (3, 0, 2, 0), "Co": (3, 2, 1, 0), "Ni": (3, 3, 1, 0)},
}  # fmt: skip
_OXIDATION = {"P": 2, "Si": 3, "Ge": 3}
_DONATION = 0.4  # electrons donated by the ligands into the metal d shell (split t2g / eg)
_ANISOTROPY = 0.7  # 1 = pure t2g/eg angular shapes, 0 = spherical d shell
_FLOOR = 1e-3  # electrons spread uniformly over the cell (vacuum density stays positive)
_TAIL = 1e-5  # shells are cut where they fall below this fraction of their peak


def _nominal_moment(a: str, ox: int) -> int:
    tu, td, eu, ed = _D_CONFIG[ox][a]
    return tu - td + eu - ed


# --------------------------------------------------------------------------------------------
# compounds


_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")


@dataclass(frozen=True)
class CompoundSpec:
    """One A2B2X6 composition: the species on the two honeycomb sites, the dimer and the ligand."""

    a_sites: tuple[str, str]
    b: str
    x: str

    def __post_init__(self) -> None:
        for a in self.a_sites:
            if a not in A_SPECIES:
                raise ValueError(f"A-site species {a!r} is not one of {A_SPECIES}")
        if len(self.a_sites) != 2:
            raise ValueError("a_sites must name the species of the two honeycomb sites")
        if self.b not in B_SPECIES:
            raise ValueError(f"B species {self.b!r} is not one of {B_SPECIES}")
        if self.x not in X_SPECIES:
            raise ValueError(f"X species {self.x!r} is not one of {X_SPECIES}")

    @property
    def mixed(self) -> bool:
        """True when the two honeycomb sites hold different species."""
        return self.a_sites[0] != self.a_sites[1]

    @property
    def formula(self) -> str:
        """Cell formula, e.g. ``Cr2Ge2Te6`` or ``CrMnSi2Te6`` (also the folder name)."""
        a1, a2 = self.a_sites
        head = f"{a1}2" if a1 == a2 else f"{a1}{a2}"
        return f"{head}{self.b}2{self.x}6"

    @property
    def oxidation(self) -> int:
        """Formal oxidation state of A: +2 with a P2X6 unit, +3 with Si2X6 or Ge2X6."""
        return _OXIDATION[self.b]

    @classmethod
    def parse(cls, formula: str) -> CompoundSpec:
        """``CompoundSpec`` from a formula: ``Cr2Ge2Te6``, ``CrGeTe3``, ``CrMnSi2Te6``, ..."""
        tokens = _TOKEN.findall(formula.replace(" ", ""))
        if not tokens or "".join(s + n for s, n in tokens) != formula.replace(" ", ""):
            raise ValueError(f"cannot parse formula {formula!r}")
        a: list[tuple[str, int]] = []
        b: dict[str, int] = {}
        x: dict[str, int] = {}
        for symbol, count in tokens:
            n = int(count) if count else 1
            if symbol in A_SPECIES:
                a.append((symbol, n))
            elif symbol in B_SPECIES:
                b[symbol] = b.get(symbol, 0) + n
            elif symbol in X_SPECIES:
                x[symbol] = x.get(symbol, 0) + n
            else:
                raise ValueError(f"{formula!r}: {symbol} is not an A, B or X species")
        if len(b) != 1 or len(x) != 1:
            raise ValueError(f"{formula!r}: expected one B and one X species")
        (b_sym, nb), (x_sym, nx) = next(iter(b.items())), next(iter(x.items()))
        na = sum(n for _, n in a)
        if (na, nb, nx) == (1, 1, 3):  # reduced formula, e.g. CrGeTe3
            a, nb, nx = [(s, 2 * n) for s, n in a], 2, 6
            na = 2
        if na != 2 or nb != 2 or nx != 6:
            raise ValueError(f"{formula!r} is not an A2B2X6 composition")
        sites = [s for s, n in a for _ in range(n)]
        sites.sort(key=A_SPECIES.index)
        return cls((sites[0], sites[1]), b_sym, x_sym)


def all_compounds() -> list[CompoundSpec]:
    """Every composition the generator knows (189), single-species cells first, in fixed order."""
    singles = [CompoundSpec((a, a), b, x) for a in A_SPECIES for b in B_SPECIES for x in X_SPECIES]
    mixed = [
        CompoundSpec((a1, a2), b, x)
        for i, a1 in enumerate(A_SPECIES)
        for a2 in A_SPECIES[i + 1 :]
        for b in B_SPECIES
        for x in X_SPECIES
    ]
    return singles + mixed


#: Well-known members always included first when a demo asks for at least this many compounds.
ANCHORS = ("Cr2Ge2Te6", "Cr2Si2Te6", "Mn2P2S6")


def choose_compounds(n: int, seed: int = 0, mixed_fraction: float = 0.35) -> list[CompoundSpec]:
    """``n`` distinct compositions, seeded: the anchors, then a random draw in which about
    ``mixed_fraction`` of the cells hold two A species (the ferrimagnets of the AFM runs)."""
    pool = all_compounds()
    if not 1 <= n <= len(pool):
        raise ValueError(f"n_compounds must be between 1 and {len(pool)}, got {n}")
    if not 0.0 <= mixed_fraction <= 1.0:
        raise ValueError(f"mixed_fraction must be in [0, 1], got {mixed_fraction}")
    rng = np.random.default_rng([seed, 0x5EED])
    chosen = [CompoundSpec.parse(f) for f in ANCHORS[: n if n >= len(ANCHORS) else 0]]
    singles = [c for c in pool if not c.mixed and c not in chosen]
    mixed = [c for c in pool if c.mixed]
    n_mixed = min(len(mixed), round(n * mixed_fraction), n - len(chosen))
    n_single = n - len(chosen) - n_mixed
    if n_single > len(singles):
        n_mixed += n_single - len(singles)
        n_single = len(singles)
    chosen += [singles[i] for i in rng.choice(len(singles), size=n_single, replace=False)]
    chosen += [mixed[i] for i in rng.choice(len(mixed), size=n_mixed, replace=False)]
    return chosen


# --------------------------------------------------------------------------------------------
# geometry


def _stable_key(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class _Params:
    """Compound-level parameters, shared by the FM and AFM runs of one composition."""

    a: float
    u: float  # X in-plane fractional coordinate
    h: float  # X height above the metal plane (A)
    f: tuple[float, float]  # covalency factor of the local moment on each A site
    afm_reduction: float
    insulating: bool
    j_mev: float  # toy nearest-neighbour exchange (> 0 ferromagnetic)
    e_base: float


def _geometry(spec: CompoundSpec, rng: np.random.Generator) -> tuple[float, float, float]:
    """Lattice constant and X position (u, h) from bond lengths.

    a = k sqrt(3) d(A-X) with k = sqrt(2) for the edge-sharing octahedra of the tellurides and
    selenides of Si/Ge, 1.335 for the trigonally squashed MPX3 family (reproduces CrSiTe3 6.79,
    MnPSe3 6.40, FePS3 5.97, NiPS3 5.76 A); u and h then make A-X and B-X as close as possible to
    their target lengths.
    """
    ox = spec.oxidation
    xs, bs = _X[spec.x], _B[spec.b]
    d_ax = float(np.mean([(_A[a].ionic[ox] + xs.ionic[-2]) * 0.985 for a in spec.a_sites]))
    d_bx = (bs.covalent + xs.covalent) * 0.99
    k = 1.335 if spec.b == "P" else math.sqrt(2.0)
    a = k * math.sqrt(3.0) * d_ax * (1.0 + 0.004 * float(rng.standard_normal()))
    t = bs.dimer / 2.0
    u = np.linspace(0.28, 0.42, 281)[:, None]
    h = np.linspace(1.0, 2.4, 281)[None, :]
    # X at fractional (u, 0, h): Cartesian (u a, 0); its two A neighbours at (a/2, +-a/(2 sqrt 3))
    r_ax = np.sqrt((a / 2 - u * a) ** 2 + a**2 / 12 + h**2)
    r_bx = np.sqrt((u * a) ** 2 + (h - t) ** 2)
    cost = (r_ax - d_ax) ** 2 + (r_bx - d_bx) ** 2
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return a, float(u[i, 0]), float(h[0, j])


def _params(spec: CompoundSpec, seed: int) -> _Params:
    rng = np.random.default_rng([seed, _stable_key(spec.formula)])
    a, u, h = _geometry(spec, rng)
    f_species = {s: float(rng.uniform(0.90, 1.06)) for s in A_SPECIES}
    f = (f_species[spec.a_sites[0]], f_species[spec.a_sites[1]])
    if spec.mixed:
        # a ferrimagnet must not compensate by accident: keep |m1 - m2| >= 0.2 muB
        n1, n2 = (_nominal_moment(s, spec.oxidation) for s in spec.a_sites)
        diff = f[0] * n1 - f[1] * n2
        if abs(diff) < 0.2:
            sign = 1.0 if diff >= 0 else -1.0
            f = (f[0], (f[0] * n1 - 0.2 * sign) / n2)
    afm_reduction = float(rng.uniform(0.0, 0.03))
    insulating = bool(rng.random() < 0.6)
    j_mev = float(rng.normal(1.0, 2.0))
    composition = [*spec.a_sites, spec.b, spec.b] + [spec.x] * 6
    e_base = sum(_ALL[s].e_ref for s in composition) - 4.5 + 0.05 * float(rng.standard_normal())
    return _Params(a, u, h, f, afm_reduction, insulating, j_mev, e_base)


def _build_structure(spec: CompoundSpec, p: _Params, vacuum: float, cell: str = "hexagonal"):
    """The cell and, per A site, its honeycomb sublattice (0, 1) and layer (0, 1).

    ``hexagonal``: the 10-atom primitive cell, A on (1/3, 2/3) (sublattice 0) and (2/3, 1/3)
    (sublattice 1), the B2 dimer at the hexagon centre along c, 3 X above and 3 below
    (staggered), slab centred at z = 1/2.

    ``rectangular``: the 20-atom orthohexagonal cell a x sqrt(3) a (lattice vectors a1, a1 + 2 a2,
    c), which holds the primitive cell at layer 0 and its image shifted by a2 at layer 1. Four A
    sites: enough for the zigzag and stripe orders as well as FM and Neel. Sites are ordered A of
    sublattice 0, A of sublattice 1, B, X, so that each species is one contiguous run.
    """
    from pymatgen.core import Lattice, Structure

    c = 2.0 * p.h + vacuum
    hexagonal = Lattice.hexagonal(p.a, c)
    dz_b = _B[spec.b].dimer / 2.0 / c
    dz_x = p.h / c
    u = p.u
    species = [*spec.a_sites, spec.b, spec.b] + [spec.x] * 6
    coords = [
        (1 / 3, 2 / 3, 0.5),
        (2 / 3, 1 / 3, 0.5),
        (0.0, 0.0, 0.5 + dz_b),
        (0.0, 0.0, 0.5 - dz_b),
        (u, 0.0, 0.5 + dz_x),
        (0.0, u, 0.5 + dz_x),
        (1 - u, 1 - u, 0.5 + dz_x),
        (1 - u, 0.0, 0.5 - dz_x),
        (0.0, 1 - u, 0.5 - dz_x),
        (u, u, 0.5 - dz_x),
    ]
    if cell == "hexagonal":
        return Structure(hexagonal, species, coords), [(0, 0), (1, 0)]
    if cell != "rectangular":
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    a1, a2, a3 = np.array(hexagonal.matrix)
    rectangular = Lattice(np.array([a1, a1 + 2.0 * a2, a3]))
    to_rect = np.linalg.inv(rectangular.matrix)
    sites: list[tuple[int, int, str, NDArray]] = []  # (sort key, layer, species, frac)
    for layer in (0, 1):
        for i, (sym, frac) in enumerate(zip(species, coords, strict=True)):
            cart = np.asarray(frac) @ hexagonal.matrix + layer * a2
            f = cart @ to_rect
            f[:2] -= np.floor(f[:2] + 1e-9)
            key = i if i < 2 else 2 + (i >= 4)  # A0, A1, B, X
            sites.append((key, layer, sym, f))
    sites.sort(key=lambda t: (t[0], t[1]))
    structure = Structure(rectangular, [t[2] for t in sites], [t[3] for t in sites])
    return structure, [(key, layer) for key, layer, _, _ in sites if key < 2]


def _spin_signs(order: str, a_sites: Sequence[tuple[int, int]]) -> list[float]:
    """+1/-1 per A site for ``order``, from each site's (sublattice, layer).

    In the rectangular cell the zigzag chains run along a and hold one site of each sublattice
    per layer; the bonds along b join sublattice 0 of one layer to sublattice 1 of the other.
    FM: all parallel. Neel: the two sublattices antiparallel (every neighbour pair antiparallel).
    Zigzag: the layers antiparallel (each site has 2 parallel neighbours, 1 antiparallel).
    Stripe: parallel along b, antiparallel along the chains (1 parallel, 2 antiparallel).
    """
    pattern = ORDER_PATTERNS[order]
    signs = []
    for sublattice, layer in a_sites:
        if pattern == "FM":
            s = 1
        elif pattern == "Neel":
            s = 1 - 2 * sublattice
        elif pattern == "zigzag":
            s = 1 - 2 * layer
        else:  # stripe
            s = 1 if sublattice == layer else -1
        signs.append(float(s))
    return signs


def _neighbours(lattice: NDArray, frac: NDArray, i: int, candidates: Sequence[int], count: int):
    """The ``count`` nearest periodic images of ``candidates`` around atom ``i``.

    Returns (index, vector from atom ``i``) pairs, nearest first.
    """
    out = []
    for j in candidates:
        d = frac[j] - frac[i]
        d -= np.round(d)
        for sx in (-1, 0, 1):
            for sy in (-1, 0, 1):
                v = (d + (sx, sy, 0)) @ lattice
                out.append((float(np.linalg.norm(v)), j, v))
    out.sort(key=lambda t: t[0])
    return [(j, v) for _, j, v in out[:count]]


def _octahedral_frame(vectors: Sequence[NDArray]) -> NDArray:
    """Orthonormal axes of a (distorted) octahedron from its six bond vectors (Loewdin)."""
    units = [v / np.linalg.norm(v) for v in vectors]
    used: set[int] = set()
    axes = []
    for i, ui in enumerate(units):
        if i in used:
            continue
        j = min(
            (k for k in range(len(units)) if k != i and k not in used), key=lambda k: ui @ units[k]
        )
        used.update((i, j))
        axes.append(ui - units[j])
    e = np.array(axes[:3])
    w, v = np.linalg.eigh(e @ e.T)
    return (v @ np.diag(w**-0.5) @ v.T) @ e


def grid_for_cell(lattice: NDArray, spacing: float = 0.25) -> tuple[int, int, int]:
    """An FFT-friendly grid (even, factors 2, 3, 5 only) with points at most ``spacing`` A apart,
    as VASP picks NGXF, NGYF, NGZF from the cutoff."""
    lengths = np.linalg.norm(np.asarray(lattice, dtype=float), axis=1)
    out = []
    for length in lengths:
        n = max(2, math.ceil(length / spacing))
        while True:
            m = n
            for p in (2, 3, 5):
                while m % p == 0:
                    m //= p
            if m == 1 and n % 2 == 0:
                break
            n += 1
        out.append(n)
    return tuple(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# densities


def _shell(r: NDArray, rp: float, m: float, rc: float) -> NDArray:
    x = r / rp
    with np.errstate(under="ignore"):
        g = np.exp(m * (np.log(np.maximum(x, 1e-300)) - x + 1.0))
    taper = np.clip(1.0 - (r / rc) ** 4, 0.0, None) ** 2
    return g * taper


def _cutoff(rp: float, m: float) -> float:
    x = np.linspace(1.0, 20.0, 4000)
    g = np.exp(m * (np.log(x) - x + 1.0))
    return float(rp * x[np.argmax(g < _TAIL)])


@dataclass
class _Channel:
    rp: float
    m: float
    angular: str  # "s" spherical, "t2g", "eg"
    electrons: float
    moment: float


def _fold_axis(values: NDArray, axis: int, lo: int, n: int) -> tuple[NDArray, NDArray]:
    """Sum the periodic images along ``axis``: returns (values over unique indices, indices)."""
    length = values.shape[axis]
    if length <= n:
        return values, np.arange(lo, lo + length) % n
    start = lo % n
    reps = -(-(start + length) // n)
    shape = list(values.shape)
    shape[axis] = reps * n
    padded = np.zeros(shape, dtype=values.dtype)
    index = [slice(None)] * values.ndim
    index[axis] = slice(start, start + length)
    padded[tuple(index)] = values
    shape[axis : axis + 1] = [reps, n]
    return padded.reshape(shape).sum(axis=axis), np.arange(n)


def _add_atom(
    total: NDArray,
    mag: NDArray,
    lattice: NDArray,
    center: NDArray,
    channels: Sequence[_Channel],
    frame: NDArray | None,
    chunk: int = 2_000_000,
) -> None:
    """Add one atom's shells, summed over all periodic images, to the grids (rho * V units).

    Each channel is normalized on the grid itself, so its integral (``sum / size``) is exactly its
    electron count or moment.
    """
    shape = total.shape
    n = np.array(shape)
    recip = np.linalg.inv(lattice).T  # rows: reciprocal vectors / 2 pi
    rc = max(_cutoff(ch.rp, ch.m) for ch in channels)
    frac = np.linalg.solve(lattice.T, center)
    half = rc * np.linalg.norm(recip, axis=1)
    lo = np.floor((frac - half) * n).astype(int)
    hi = np.ceil((frac + half) * n).astype(int) + 1
    fk = np.arange(lo[2], hi[2]) / n[2]
    fj = np.arange(lo[1], hi[1]) / n[1]
    folded_j = n[1] if hi[1] - lo[1] > n[1] else hi[1] - lo[1]
    folded_k = n[2] if hi[2] - lo[2] > n[2] else hi[2] - lo[2]
    folded_i = n[0] if hi[0] - lo[0] > n[0] else hi[0] - lo[0]
    raw = np.zeros((len(channels), folded_i, folded_j, folded_k))
    # at most one period per chunk along axis 0, so the wrapped indices of a chunk are unique
    step = max(1, min(n[0], chunk // ((hi[1] - lo[1]) * (hi[2] - lo[2]))))
    idx_j = idx_k = None
    for i0 in range(lo[0], hi[0], step):
        i1 = min(i0 + step, hi[0])
        fi = np.arange(i0, i1) / n[0]
        xyz = [
            fi[:, None, None] * lattice[0, c]
            + fj[None, :, None] * lattice[1, c]
            + fk[None, None, :] * lattice[2, c]
            - center[c]
            for c in range(3)
        ]
        r = np.sqrt(xyz[0] ** 2 + xyz[1] ** 2 + xyz[2] ** 2)
        q = None
        if frame is not None and any(ch.angular != "s" for ch in channels):
            inv_r = 1.0 / np.maximum(r, 1e-12)
            q = np.zeros_like(r)
            for e in frame:
                cos2 = ((xyz[0] * e[0] + xyz[1] * e[1] + xyz[2] * e[2]) * inv_r) ** 2
                q += cos2 * cos2
        for c_idx, ch in enumerate(channels):
            g = _shell(r, ch.rp, ch.m, _cutoff(ch.rp, ch.m))
            if ch.angular == "t2g":
                g *= 1.0 + _ANISOTROPY * (2.5 * (1.0 - q) - 1.0)
            elif ch.angular == "eg":
                g *= 1.0 + _ANISOTROPY * (3.75 * (q - 1.0 / 3.0) - 1.0)
            g, idx_j = _fold_axis(g, 1, lo[1], n[1])
            g, idx_k = _fold_axis(g, 2, lo[2], n[2])
            if folded_i == n[0]:
                raw[c_idx, np.arange(i0, i1) % n[0]] += g
            else:
                raw[c_idx, i0 - lo[0] : i1 - lo[0]] += g
    idx_i = np.arange(n[0]) if folded_i == n[0] else np.arange(lo[0], hi[0]) % n[0]
    size = total.size
    box_total = np.zeros(raw.shape[1:])
    box_mag = np.zeros(raw.shape[1:])
    for c_idx, ch in enumerate(channels):
        s = raw[c_idx].sum()
        if s <= 0 or (ch.electrons == 0 and ch.moment == 0):
            continue
        normalized = raw[c_idx] * (size / s)
        box_total += ch.electrons * normalized
        if ch.moment:
            box_mag += ch.moment * normalized
    ix = np.ix_(idx_i, idx_j, idx_k)
    total[ix] += box_total
    mag[ix] += box_mag


# --------------------------------------------------------------------------------------------
# one calculation


@dataclass(frozen=True)
class SynthCalculation:
    """One generated calculation, in memory.

    ``chg_total`` and ``chg_magnetization`` are in CHGCAR convention (``rho * V_cell`` on the
    grid, x fastest when written); :attr:`total` and :attr:`magnetization` give them in e/A^3 and
    muB/A^3 as :func:`magnb.vasp.read_chgcar` does. ``moment`` is exactly
    ``chg_magnetization.sum() / chg_magnetization.size``, the number written to the OUTCAR and
    OSZICAR; ``nelect`` is the integral of ``chg_total``.
    """

    compound: CompoundSpec
    order: str
    seed: int
    structure: object  # pymatgen.core.Structure
    chg_total: NDArray[np.float64]
    chg_magnetization: NDArray[np.float64]
    moment: float
    nelect: float
    site_moments: NDArray[np.float64]  #: per-site moments (muB), the OUTCAR 'tot' column
    site_spd: NDArray[np.float64]  #: (natoms, 3) s, p, d parts of the per-site moments
    site_charges: NDArray[np.float64]  #: (natoms, 3) s, p, d charges inside the spheres
    magmom_init: NDArray[np.float64]  #: INCAR MAGMOM (also written before the CHGCAR's block 2)
    energy: float  #: toy energy(sigma->0), eV
    insulating: bool
    augmentation: tuple[bytes, bytes]  #: formatted augmentation sections after blocks 1 and 2
    #: None: a collinear run. A unit vector: a non-collinear run whose magnetization points along
    #: it everywhere (mx, my, mz = axis * m); ``moment`` is then the moment along the axis
    spin_axis: tuple[float, float, float] | None = None

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(int(k) for k in self.chg_total.shape)  # type: ignore[return-value]

    @property
    def volume(self) -> float:
        return float(self.structure.volume)

    @property
    def total(self) -> NDArray[np.float64]:
        """Electron density in e/A^3."""
        return self.chg_total / self.volume

    @property
    def magnetization(self) -> NDArray[np.float64]:
        """Magnetization density (up - down) in muB/A^3."""
        return self.chg_magnetization / self.volume

    @property
    def formula(self) -> str:
        return self.compound.formula

    @property
    def noncollinear(self) -> bool:
        return self.spin_axis is not None

    @property
    def moment_vector(self) -> tuple[float, ...]:
        """The total moment as VASP reports it: (m,) collinear, (mx, my, mz) non-collinear."""
        return _components(self.moment, self.spin_axis)

    @property
    def chg_blocks(self) -> list[NDArray[np.float64]]:
        """The CHGCAR's grid blocks: total and m, or total, mx, my, mz (``rho * V_cell``)."""
        if self.spin_axis is None:
            return [self.chg_total, self.chg_magnetization]
        return [self.chg_total, *(a * self.chg_magnetization for a in self.spin_axis)]


def _components(value: float, axis: tuple[float, float, float] | None) -> tuple[float, ...]:
    return (value,) if axis is None else tuple(a * value for a in axis)


def make_calculation(
    compound: CompoundSpec | str,
    order: str = "FM",
    grid: tuple[int, int, int] | None = (24, 24, 96),
    seed: int = 0,
    vacuum: float = 18.0,
    spacing: float = 0.25,
    cell: str = "hexagonal",
    spin_axis: tuple[float, float, float] | None = None,
) -> SynthCalculation:
    """Generate one spin-polarized calculation in memory (demo data, not DFT).

    ``compound`` is a :class:`CompoundSpec` or a formula (``"Cr2Ge2Te6"``, ``"CrMnSi2Te6"``);
    ``order`` is a tag of :data:`ORDERS` (``"AFM"`` is Neel) that ``cell`` can hold
    (:data:`CELLS`: the 10-atom ``hexagonal`` cell holds FM and Neel, the 20-atom ``rectangular``
    one also zigzag and stripe). ``grid`` is the CHGCAR grid (``None``: chosen from the cell with
    points at most ``spacing`` A apart). The runs of one compound, seed and cell share the
    structure. The same arguments always give the same arrays.

    ``spin_axis`` (a unit vector) makes the run non-collinear: the same densities with every
    moment turned onto that axis (``LNONCOLLINEAR = T``: CHGCAR blocks total, mx, my, mz; OUTCAR
    tables ``magnetization (x)``, ``(y)``, ``(z)``; ``ISPIN = 1`` printed, as VASP prints it).
    Give the axis's components in hundredths (``(0.36, -0.48, 0.8)``) so that the reported
    components stay exact.
    """
    if spin_axis is not None:
        spin_axis = tuple(float(a) for a in spin_axis)  # type: ignore[assignment]
        if len(spin_axis) != 3 or abs(math.hypot(*spin_axis) - 1.0) > 1e-9:
            raise ValueError(f"spin_axis must be a unit vector (x, y, z), got {spin_axis}")
    spec = CompoundSpec.parse(compound) if isinstance(compound, str) else compound
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
    if order not in CELLS[cell]:
        raise ValueError(f"order must be one of {CELLS[cell]} in a {cell} cell, got {order!r}")
    if vacuum < 8.0:
        raise ValueError(f"vacuum must be at least 8 A so that slabs do not touch, got {vacuum}")
    p = _params(spec, seed)
    structure, a_sites = _build_structure(spec, p, vacuum, cell)
    lattice = np.array(structure.lattice.matrix)
    if grid is None:
        grid = grid_for_cell(lattice, spacing)
    grid = tuple(int(k) for k in grid)  # type: ignore[assignment]
    if len(grid) != 3 or min(grid) < 2:
        raise ValueError(f"grid must be three integers >= 2, got {grid}")
    rng = np.random.default_rng([seed, _stable_key(spec.formula), ORDERS.index(order) + 1])

    frac = np.array(structure.frac_coords)
    cart = np.array(structure.cart_coords)
    symbols = [site.specie.symbol for site in structure]
    natoms = len(symbols)
    ox = spec.oxidation
    fm = order == "FM"
    n_a = len(a_sites)  # A sites come first, then the B dimer(s), then X
    a_idx = list(range(n_a))
    b_idx = list(range(n_a, n_a + n_a))
    x_idx = list(range(2 * n_a, natoms))
    sublattice = [s for s, _ in a_sites]

    # ---- moments
    moments = np.zeros(natoms)
    nominal = [_nominal_moment(s, ox) for s in spec.a_sites]  # per sublattice
    signs = _spin_signs(order, a_sites)
    site_nominal = [nominal[s] for s in sublattice]
    for k in a_idx:
        scale = 1.0 if fm else 1.0 - p.afm_reduction
        moments[k] = signs[k] * p.f[sublattice[k]] * site_nominal[k] * scale
    moments[:n_a] = np.round(moments[:n_a], 3)
    alpha = _X[spec.x].alpha
    for i in x_idx:
        nb = _neighbours(lattice, frac, i, a_idx, 2)
        moments[i] = -alpha * sum(moments[j] for j, _ in nb)
    for i in b_idx:
        nb = _neighbours(lattice, frac, i, x_idx, 3)
        moments[i] = 0.15 * np.mean([moments[j] for j, _ in nb])
    moments[n_a:] = np.round(moments[n_a:], 3)
    moments[moments == 0] = 0.0  # no "-0.000" in the tables

    local = float(moments.sum())
    net_nominal = sum(sign * n for sign, n in zip(signs, site_nominal, strict=True))
    if fm:
        target = float(sum(site_nominal)) if p.insulating else local * (1 + rng.uniform(0.03, 0.12))
    elif not spec.mixed:
        target = 0.0 if p.insulating else float(rng.normal(0.0, 3e-4))
    elif p.insulating and net_nominal != 0:
        target = float(net_nominal)
    else:
        target = local * (1 + rng.uniform(0.03, 0.12))
    target = round(target, 4)

    # ---- shells
    total = np.zeros(grid)
    mag = np.zeros(grid)
    for i, sym in enumerate(symbols):
        sp = _ALL[sym]
        channels: list[_Channel] = []
        frame = None
        if i < n_a:
            tu, td, eu, ed = _D_CONFIG[ox][sym]
            ratio = moments[i] / site_nominal[i]  # covalency factor with the order's sign
            m_t, m_e = ratio * (tu - td), ratio * (eu - ed)
            n_t = max(tu + td + 0.6 * _DONATION, 1.1 * abs(m_t))
            n_e = max(eu + ed + 0.4 * _DONATION, 1.1 * abs(m_e))
            (_, n_semi, rp_semi, m_semi), (_, _, rp_s, m_s) = sp.shells
            n_s = sp.zval - n_semi - n_t - n_e
            if n_s < 0.2:
                raise RuntimeError(f"{sym}: d shell holds more than the valence")  # table bug
            nb = _neighbours(lattice, frac, i, x_idx, 6)
            frame = _octahedral_frame([v for _, v in nb])
            d_shell = [_Channel(sp.rd, 4.0, "t2g", n_t, m_t), _Channel(sp.rd, 4.0, "eg", n_e, m_e)]
            _add_atom(total, mag, lattice, cart[i], d_shell, frame)  # a smaller box than the 4s
            channels = [
                _Channel(rp_semi, m_semi, "s", n_semi, 0.0),
                _Channel(rp_s, m_s, "s", n_s, 0.0),
            ]
        else:
            for name, electrons, rp, m in sp.shells:
                channels.append(_Channel(rp, m, "s", electrons, moments[i] if name == "p" else 0.0))
        _add_atom(total, mag, lattice, cart[i], [c for c in channels if c.electrons > 0], frame)

    nelect = float(sum(_ALL[s].zval for s in symbols))
    size = total.size
    total *= (nelect - _FLOOR) / (total.sum() / size)
    total += _FLOOR
    # the diffuse (interstitial) part of the moment follows the valence density
    interstitial = target - float(mag.sum() / size)
    mag += interstitial * (total / nelect)
    moment = float(mag.sum() / size)

    site_spd = np.zeros((natoms, 3))
    site_charges = np.zeros((natoms, 3))
    for i, sym in enumerate(symbols):
        mu = moments[i]
        if i < n_a:
            site_spd[i] = (0.004 * mu, 0.012 * mu, 0.984 * mu)
            tu, td, eu, ed = _D_CONFIG[ox][sym]
            semi = _ALL[sym].shells[0][1]
            site_charges[i] = (0.35, 0.9 * semi + 0.3, 0.93 * (tu + td + eu + ed + _DONATION))
        elif i < 2 * n_a:
            site_spd[i] = (0.2 * mu, 0.8 * mu, 0.0)
            n_p = dict((name, e) for name, e, _, _ in _ALL[sym].shells)
            site_charges[i] = (0.75 * 2, 0.6 * n_p["p"] + 0.5, 0.9 * n_p.get("d", 0.0) + 0.1)
        else:
            site_spd[i] = (0.03 * mu, 0.95 * mu, 0.02 * mu)
            site_charges[i] = (0.8 * 2, 0.7 * 4 + 0.3, 0.1)
    site_charges *= 1.0 + 0.01 * rng.standard_normal(site_charges.shape)

    magmom_init = np.zeros(natoms)
    magmom_init[:n_a] = [float(n) * sign for n, sign in zip(site_nominal, signs, strict=True)]

    # toy Heisenberg energy: -J S1 S2 per parallel nearest-neighbour bond (3 per A site, each
    # joining the two sublattices), +J S1 S2 per antiparallel one
    s1, s2 = nominal[0] / 2.0, nominal[1] / 2.0
    bonds = (
        sum(
            signs[i] * signs[j]
            for i in a_idx
            for j, _ in _neighbours(lattice, frac, i, [k for k in a_idx if k != i], 3)
        )
        / 2.0
    )
    exchange = p.j_mev * 1e-3 * s1 * s2 * bonds
    energy = (n_a // 2) * p.e_base - exchange + float(rng.normal(0.0, 2e-4))

    augmentation = (
        _augmentation(symbols, moments, rng, spin=False),
        _augmentation(symbols, moments, rng, spin=True),
    )
    return SynthCalculation(
        compound=spec,
        order=order,
        seed=seed,
        structure=structure,
        chg_total=total,
        chg_magnetization=mag,
        moment=moment,
        nelect=nelect,
        site_moments=moments,
        site_spd=site_spd,
        site_charges=site_charges,
        magmom_init=magmom_init,
        energy=energy,
        insulating=p.insulating,
        augmentation=augmentation,
        spin_axis=spin_axis,
    )


# --------------------------------------------------------------------------------------------
# formatting


def _fortran(value: float, digits: int, compact: bool = False) -> str:
    """Fortran E format with a 0.ddd mantissa: ``0.9566982E+01``, ``-0.1823699E+02``; with
    ``compact`` the leading zero of negatives is dropped as VASP does (``-.11035115E+02``)."""
    if value == 0.0 or not math.isfinite(value):
        mant, exp = 0, 0
    else:
        exp = math.floor(math.log10(abs(value))) + 1
        mant = round(abs(value) / 10.0**exp * 10**digits)
        if mant >= 10**digits:
            mant //= 10
            exp += 1
    body = f".{mant:0{digits}d}E{exp:+03d}"
    if value < 0:
        return ("-" if compact else "-0") + body
    return "0" + body


def _augmentation(
    symbols: Sequence[str], moments: NDArray, rng: np.random.Generator, spin: bool
) -> bytes:
    """Augmentation occupancies as VASP writes them after a grid block: one record per atom,
    ``augmentation occupancies   i   n`` then ``n`` values, five per line (E15.7). The values are
    seeded random numbers with the sparsity pattern of real files (they carry no physics)."""
    lines = []
    for i, sym in enumerate(symbols):
        count = _ALL[sym].aug_count
        pattern = np.random.default_rng(_stable_key(f"aug-{sym}-{count}")).random(count) < 0.45
        if spin:
            values = moments[i] * rng.normal(0.0, 0.3, count) * pattern
        else:
            values = _ALL[sym].zval * rng.normal(0.0, 0.6, count) * pattern
        lines.append(f"augmentation occupancies{i + 1:4d}{count:4d}")
        for start in range(0, count, 5):
            chunk = values[start : start + 5]
            lines.append("".join(f"{_fortran(float(v), 7):>15s}" for v in chunk))
    return ("\n".join(lines) + "\n").encode()


def _poscar_text(calc: SynthCalculation) -> str:
    from pymatgen.io.vasp.inputs import Poscar

    return Poscar(calc.structure, comment=_comment(calc)).get_str(significant_figures=8)


def _comment(calc: SynthCalculation) -> str:
    return f"{calc.formula} {calc.order} -- {DISCLAIMER}"


def _magmom_str(values: NDArray) -> str:
    out, k = [], 0
    vals = [float(v) for v in values]
    while k < len(vals):
        j = k
        while j < len(vals) and vals[j] == vals[k]:
            j += 1
        run = j - k
        out.append(f"{run}*{vals[k]:.1f}" if run > 1 else f"{vals[k]:.1f}")
        k = j
    return " ".join(out)


def _magmom_init(calc: SynthCalculation) -> NDArray[np.float64]:
    """INCAR MAGMOM: one value per atom, or three (x, y, z) per atom for a non-collinear run."""
    if calc.spin_axis is None:
        return calc.magmom_init
    return np.outer(calc.magmom_init, calc.spin_axis).ravel() + 0.0  # + 0.0: no "-0.00"


def _magmom_list(values: NDArray) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _incar_text(calc: SynthCalculation) -> str:
    spin = "LNONCOLLINEAR = .TRUE.\n" if calc.noncollinear else "ISPIN = 2\n"
    magmom = _magmom_init(calc)
    return (
        f"SYSTEM = {calc.formula} {calc.order} ({DISCLAIMER})\n"
        "PREC = Accurate\n"
        "ENCUT = 520\n"
        "EDIFF = 1E-6\n"
        "ISMEAR = 0\n"
        "SIGMA = 0.05\n"
        f"{spin}"
        f"MAGMOM = {_magmom_str(magmom) if calc.spin_axis is None else _magmom_list(magmom)}\n"
        "LORBIT = 11\n"
        "LCHARG = .TRUE.\n"
        "LWAVE = .FALSE.\n"
        "NSW = 0\n"
        "IBRION = -1\n"
    )


def _text_rng(calc: SynthCalculation, stream: int) -> np.random.Generator:
    return np.random.default_rng(
        [calc.seed, _stable_key(calc.formula), ORDERS.index(calc.order) + 1, stream]
    )


def _scf_history(calc: SynthCalculation) -> list[tuple[float, float]]:
    """(energy, moment) per electronic step, converging onto the final values (last is exact).
    The OUTCAR and the OSZICAR of one calculation tell the same history."""
    rng = _text_rng(calc, 1)
    steps = 14 + int(rng.integers(0, 6))
    m0 = float(np.sum(calc.magmom_init))
    out = []
    for k in range(steps):
        w = 0.55**k
        e = calc.energy + 80.0 * w * (1 if k == 0 else 0.02) + 1e-3 * w * float(rng.normal())
        m = calc.moment + (m0 - calc.moment) * w + 0.01 * w * float(rng.normal())
        out.append((e, m))
    out[-1] = (calc.energy, calc.moment)
    return out


def _species_runs(symbols: Sequence[str]) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for s in symbols:
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return runs


def _site_table(title: str, values: NDArray) -> list[str]:
    lines = [f" {title}", " ", "# of ion       s       p       d       tot", "-" * 42]
    for i, row in enumerate(values, start=1):
        lines.append(f"{i:5d}   " + "".join(f"{v:8.3f}" for v in (*row, row.sum())))
    lines.append("-" * 50)
    sums = values.sum(axis=0)
    lines.append("tot     " + "".join(f"{v:8.3f}" for v in (*sums, sums.sum())))
    lines.append(" ")
    return lines


def _outcar_text(calc: SynthCalculation) -> str:
    rng = _text_rng(calc, 2)
    s = calc.structure
    symbols = [site.specie.symbol for site in s]
    runs = _species_runs(symbols)
    kinds = [sym for sym, _ in runs]
    lattice = np.array(s.lattice.matrix)
    recip = np.linalg.inv(lattice).T
    nx, ny, nz = calc.grid_shape
    nbands = int(math.ceil(calc.nelect * 0.6 / 2.0) * 2 + 8)
    efermi = -1.5 + 0.8 * float(rng.random())
    # site tables: 'tot' must equal the per-site moment, so print d = tot - s - p
    spd = calc.site_spd.copy()
    spd[:, 2] = calc.site_moments - spd[:, 0] - spd[:, 1]

    L: list[str] = [
        f" vasp.5.4.4 format imitation -- {DISCLAIMER} ({calc.formula} {calc.order}, "
        f"seed {calc.seed})",
        " executed on             magnb.synth date 2000.01.01  00:00:00",
        " running on    2 total cores",
        " distrk:  each k-point on    2 cores,    1 groups",
        " distr:  one band on NCORES_PER_BAND=   1 cores,    2 groups",
        "",
        "",
        "-" * 104,
        "",
        "",
        " INCAR:",
    ]
    L += ["   " + line for line in _incar_text(calc).splitlines()]
    for sym in kinds:
        L.append(f" POTCAR:    {_ALL[sym].potcar}")
    for sym in kinds:
        sp = _ALL[sym]
        L += [
            f"   VRHFIN ={sym}:",
            f"   TITEL  = {sp.potcar}",
            f"   POMASS = {sp.mass:8.3f}; ZVAL   = {sp.zval:8.3f}    mass and valenz",
            f"   RWIGS  = {sp.rwigs / 0.529177:8.3f}; RWIGS  = {sp.rwigs:8.3f}"
            "    wigner-seitz radius (au A)",
        ]
    L += [
        "",
        f" POSCAR: {calc.formula}",
        "  positions in direct lattice",
        "",
        "",
        " Dimension of arrays:",
        f"   k-points           NKPTS =     13   k-points in BZ     NKDIM =     13"
        f"   number of bands    NBANDS= {nbands:6d}",
        f"   number of dos      NEDOS =    301   number of ions     NIONS = {len(s):6d}",
        "   non local maximal  LDIM  =      6   non local SUM 2l+1 LMDIM =     18",
        f"   total plane-waves  NPLWV = {nx * ny * nz // 8:6d}",
        f"   dimension x,y,z NGX = {nx // 2:5d} NGY ={ny // 2:5d} NGZ ={nz // 2:5d}",
        f"   dimension x,y,z NGXF= {nx:5d} NGYF={ny:5d} NGZF={nz:5d}",
        "   ions per type =        " + "".join(f"{n:4d}" for _, n in runs),
        "",
        f" SYSTEM =  {calc.formula} {calc.order}",
        f" POSCAR =  {calc.formula}",
        "",
        " Startparameter for this run:",
        "   NWRITE =      2    write-flag & timer",
        "   PREC   = accura    normal or accurate (medium, high low for compatibility)",
        "   ISTART =      0    job   : 0-new  1-cont  2-samecut",
        "   ICHARG =      2    charge: 1-file 2-atom 10-const",
        # VASP prints ISPIN = 1 for a non-collinear run (the spinor has no ISPIN)
        f"   ISPIN  =      {1 if calc.noncollinear else 2}    spin polarized calculation?",
        f"   LNONCOLLINEAR =      {'T' if calc.noncollinear else 'F'} non collinear calculations",
        "   LSORBIT =      F    spin-orbit coupling",
        " Electronic Relaxation 1",
        "   ENCUT  =  520.0 eV  38.22 Ry    6.18 a.u.",
        "   EDIFF  = 0.1E-05   stopping-criterion for ELM",
        " Ionic relaxation",
        "   NSW    =      0    number of steps for IOM",
        "   IBRION =     -1    ionic relax: 0-MD 1-quasi-New 2-CG",
        "  Mass of Ions in am",
        "   POMASS = " + "".join(f"{_ALL[k].mass:6.2f}" for k in kinds),
        "  Ionic Valenz",
        "   ZVAL   = " + "".join(f"{_ALL[k].zval:7.2f}" for k in kinds),
        "  Atomic Wigner-Seitz radii",
        "   RWIGS  = " + "".join(f"{_ALL[k].rwigs:7.2f}" for k in kinds),
        f"   NELECT = {calc.nelect:12.4f}    total number of electrons",
        "   NUPDOWN=      -1.0000    fix difference up-down",
        "",
        " DOS related values:",
        "   ISMEAR =     0;   SIGMA  =   0.05  broadening in eV -4-tet -1-fermi 0-gaus",
        "",
        "",
        "-" * 104,
        "",
        "",
        " position of ions in fractional coordinates (direct lattice) ",
    ]
    L += [f"   {f[0]:11.9f}  {f[1]:11.9f}  {f[2]:11.9f}" for f in s.frac_coords]
    L += ["", " position of ions in cartesian coordinates  (Angst):"]
    L += [f"   {c[0]:11.8f}  {c[1]:11.8f}  {c[2]:11.8f}" for c in s.cart_coords]
    # k-point table (pymatgen reads the plane-wave counts from it)
    L += ["", "", "-" * 104, "", ""]
    npw = nx * ny * nz // 30
    for k in range(13):
        kx, ky = (k % 4) / 6.0, (k // 4) / 6.0
        L.append(
            f" k-point {k + 1:5d} :   {kx:6.4f} {ky:6.4f} 0.0000  plane waves: {npw - 3 * k:7d}"
        )
    L += [
        "",
        f" maximum and minimum number of plane-waves per node : {npw:9d} {npw - 36:8d}",
        "",
        "",
        "-" * 104,
        "",
    ]

    history = _scf_history(calc)
    last = len(history)
    for k, (e, m) in enumerate(history, start=1):
        e_wo = e - 0.0005
        previous = history[k - 2][0] if k > 1 else 0.0
        L += [
            f"----------------------------------------- Iteration    1({k:4d})"
            "  ---------------------------------------",
            "",
            f" eigenvalue-minimisations  : {int(rng.integers(200, 900)):5d}",
            f" total energy-change (2. order) :{_fortran(e - previous, 7)}",
            f" number of electron {calc.nelect:15.7f} magnetization "
            + " ".join(f"{c:15.7f}" for c in _components(m, calc.spin_axis)),
            f" augmentation part  {0.2 * calc.nelect * (1 + 0.01 / k):15.7f} magnetization "
            + " ".join(f"{0.3 * c:15.7f}" for c in _components(m, calc.spin_axis)),
            "",
            " Free energy of the ion-electron system (eV)",
            "  ---------------------------------------------------",
            f"  free energy    TOTEN  = {e:18.8f} eV",
            "",
            f"  energy without entropy = {e_wo:17.8f}  energy(sigma->0) = {e:17.8f}",
            "",
            "",
            "-" * 104,
            "",
        ]
        if k == last:
            L += [
                "",
                f" E-fermi : {efermi:8.4f}     XC(G=0): -10.1234     alpha+bet :-12.3456",
                "",
            ]
    L += ["", "------------------------ aborting loop because EDIFF is reached ", "", ""]
    L += _site_table("total charge     ", calc.site_charges)
    L += ["", ""]
    if calc.spin_axis is None:
        L += _site_table("magnetization (x)", spd)
    else:  # one table per component, the moments turned onto the axis
        for name, a in zip("xyz", calc.spin_axis, strict=True):
            L += _site_table(f"magnetization ({name})", a * spd + 0.0)
            L += ["", ""]
    L += [
        "",
        "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
        "  ---------------------------------------------------",
        f"  free  energy   TOTEN  = {calc.energy:20.8f} eV",
        "",
        f"  energy  without entropy= {calc.energy - 0.0005:17.8f}"
        f"  energy(sigma->0) = {calc.energy:17.8f}",
        "",
        "",
        " VOLUME and BASIS-vectors are now :",
        " -----------------------------------------------------------------------------",
        "  energy-cutoff  :      520.00",
        f"  volume of cell : {calc.volume:11.2f}",
        "      direct lattice vectors                 reciprocal lattice vectors",
    ]
    for a, b in zip(lattice, recip, strict=True):
        L.append("  " + "".join(f"{v:13.9f}" for v in a) + "  " + "".join(f"{v:13.9f}" for v in b))
    L += [
        "",
        "",
        " General timing and accounting informations for this job:",
        " ========================================================",
        "  ",
        "                  Total CPU time used (sec):        0.000",
        "                            User time (sec):        0.000",
        "                          System time (sec):        0.000",
        "                         Elapsed time (sec):        0.000",
        "  ",
        "                   Maximum memory used (kb):           0.",
        "                   Average memory used (kb):           0.",
        "",
    ]
    return "\n".join(L) + "\n"


def _oszicar_text(calc: SynthCalculation) -> str:
    history = _scf_history(calc)
    lines = [
        "       N       E                     dE             d eps       ncg     rms"
        "          rms(c)"
    ]
    prev = 0.0
    for k, (e, _m) in enumerate(history, start=1):
        algo = "DAV" if k <= 5 else "RMM"
        de = e - prev
        prev = e
        rms = 50.0 * 0.5**k
        line = (
            f"{algo}: {k:3d}   {_fortran(e, 12):>20s}   {_fortran(de, 5):>12s}"
            f"   {_fortran(0.3 * de, 5):>12s}  {40 + k % 17:4d}   {_fortran(rms, 3)}"
        )
        if 5 <= k < len(history):
            line += f"    {_fortran(0.5 * rms, 3)}"
        lines.append(line)
    f_energy = calc.energy + 0.0005
    lines.append(
        f"   1 F= {_fortran(f_energy, 8, compact=True)}"
        f" E0= {_fortran(calc.energy, 8, compact=True)}"
        f"  d E ={_fortran(f_energy, 6, compact=True)}  mag="
        + " ".join(f"{c:11.4f}" for c in calc.moment_vector)
    )
    return "\n".join(lines) + "\n"


def write_calculation(folder: str | Path, calc: SynthCalculation) -> Path:
    """Write one calculation as VASP would leave it: POSCAR, INCAR, CHGCAR, OUTCAR, OSZICAR.

    Every file is written to a temporary name and renamed into place. Returns the folder.
    """
    from magnb.vasp import write_chgcar

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("POSCAR", _poscar_text(calc)),
        ("INCAR", _incar_text(calc)),
        ("OUTCAR", _outcar_text(calc)),
        ("OSZICAR", _oszicar_text(calc)),
    ):
        with atomic_write(folder / name) as fh:
            fh.write(text.encode())
    blocks = calc.chg_blocks
    write_chgcar(
        folder / "CHGCAR",
        calc.structure,
        blocks,
        augmentation=[calc.augmentation[min(k, 1)] for k in range(len(blocks))],
        magmoms=_magmom_init(calc),
        comment=_comment(calc),
    )
    return folder


# --------------------------------------------------------------------------------------------
# the demo tree


@dataclass(frozen=True)
class SynthConfig:
    """What a generated tree holds. Defaults: 32 compounds x (FM, AFM) in the 10-atom hexagonal
    cell = 64 calculations of about 2 MB each, written in seconds (the tests' trees).
    :meth:`demo` is the tree ``magnb demo`` and ``magnb synth`` write: four orders in the
    rectangular cell, so that the order is a spatial pattern, not only an amount of moment.

    ``compounds`` (formulas) overrides ``n_compounds``/``mixed_fraction``. ``grid`` is the CHGCAR
    grid of every calculation; ``None`` lets each cell pick its own from ``spacing`` (A) as VASP
    does, so grids differ between compounds. ``orders`` are tags of :data:`ORDERS` that ``cell``
    can hold (:data:`CELLS`).
    """

    n_compounds: int = 32
    grid: tuple[int, int, int] | None = (24, 24, 96)
    spacing: float = 0.25
    seed: int = 0
    vacuum: float = 18.0
    orders: tuple[str, ...] = ("FM", "AFM")
    mixed_fraction: float = 0.35
    compounds: tuple[str, ...] | None = None
    cell: str = "hexagonal"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {self.cell!r}")
        for order in self.orders:
            if order not in CELLS[self.cell]:
                raise ValueError(
                    f"orders must be drawn from {CELLS[self.cell]} in a {self.cell} cell, "
                    f"got {order!r}"
                )

    @classmethod
    def demo(cls, n_compounds: int = DEMO_COMPOUNDS) -> SynthConfig:
        """The demo tree: ``n_compounds`` x (FM, Neel, zigzag, stripe) in the 20-atom rectangular
        cell on a 24 x 40 x 96 grid (about 0.28 A between points in the plane)."""
        return cls(
            n_compounds=n_compounds,
            grid=(24, 40, 96),
            orders=("FM", "AFM-Neel", "AFM-zigzag", "AFM-stripe"),
            cell="rectangular",
        )

    def compound_specs(self) -> list[CompoundSpec]:
        """The compositions this configuration generates, in order."""
        if self.compounds is not None:
            specs = [CompoundSpec.parse(f) for f in self.compounds]
            formulas = [s.formula for s in specs]
            if len(set(formulas)) != len(formulas):
                raise ValueError(f"duplicate compounds in {formulas}")
            return specs
        return choose_compounds(self.n_compounds, self.seed, self.mixed_fraction)


def write_demo_tree(
    root: str | Path, config: SynthConfig | None = None, progress: bool = True
) -> list[Path]:
    """Write the demo tree ``<root>/<formula>/<order>/`` and return the calculation folders.

    Generated demo data, not DFT (see the module docstring); ``<root>/README.txt`` says so too.
    Existing files are overwritten with identical bytes for the same configuration. When
    ``root`` holds a demo tree written with other settings (other compounds, orders or cell),
    its calculations that this configuration does not make are removed, so that the tree is
    exactly this configuration's; a folder without the demo README is only added to.
    """
    from tqdm.auto import tqdm

    config = config or SynthConfig()
    root = Path(root)
    specs = config.compound_specs()
    jobs = [(spec, order) for spec in specs for order in config.orders]
    _remove_other_calculations(root, {(spec.formula, order) for spec, order in jobs})
    folders = []
    for spec, order in tqdm(jobs, desc="demo calculations", unit="calc", disable=not progress):
        calc = make_calculation(
            spec, order, grid=config.grid, seed=config.seed, vacuum=config.vacuum,
            spacing=config.spacing, cell=config.cell,
        )  # fmt: skip
        folders.append(write_calculation(root / spec.formula / order, calc))
    with atomic_write(root / "README.txt") as fh:
        fh.write(_readme(config, specs).encode())
    return folders


def _remove_other_calculations(root: Path, keep: set[tuple[str, str]]) -> None:
    """Remove the ``<formula>/<order>`` folders of an earlier demo tree in ``root`` that are not
    in ``keep``, and formula folders left empty. Only a tree whose README.txt is the demo's."""
    import shutil

    readme = root / "README.txt"
    if not readme.is_file() or not readme.read_text().startswith(DISCLAIMER.upper()):
        return
    for formula_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for calc_dir in sorted(p for p in formula_dir.iterdir() if p.is_dir()):
            if (formula_dir.name, calc_dir.name) not in keep:
                shutil.rmtree(calc_dir)
        if not any(formula_dir.iterdir()):
            formula_dir.rmdir()


def _readme(config: SynthConfig, specs: Sequence[CompoundSpec]) -> str:
    return (
        f"{DISCLAIMER.upper()}\n\n"
        "Generated by magnb.synth.write_demo_tree to exercise magnb end to end. The files imitate\n"
        "spin-polarized VASP output (POSCAR, INCAR, CHGCAR, OUTCAR, OSZICAR) for A2B2X6\n"
        "monolayers; densities are model atomic shells, moments a table of nominal spins with\n"
        "seeded noise.\n"
        "Do not use them as physical results.\n\n"
        f"seed: {config.seed}\ngrid: {config.grid}\nvacuum: {config.vacuum}\n"
        f"cell: {config.cell}\norders: {', '.join(config.orders)}\ncompounds ({len(specs)}): "
        + " ".join(s.formula for s in specs)
        + "\n"
    )
