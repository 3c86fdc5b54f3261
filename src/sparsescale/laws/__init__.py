"""Scaling laws: Chinchilla, paper A's average-parameter law (and its extension that sees
recovery after the last prune) and paper B's sparsity law,
with fitting (Chinchilla approach 3; paper B's BFGS procedure), bootstrap intervals,
held-out errors and derived quantities. See ``laws/README.md``.

Importing this package is cheap; the classes load numpy/scipy on first use:
``from sparsescale.laws import ChinchillaLaw, AverageParamsLaw, RecoveryLaw, SparsityLaw``.
"""

_LAZY = {
    "ChinchillaLaw": "sparsescale.laws.chinchilla",
    "AverageParamsLaw": "sparsescale.laws.chinchilla",
    "RecoveryLaw": "sparsescale.laws.recovery",
    "SparsityLaw": "sparsescale.laws.sparsity",
    "select_points": "sparsescale.laws.base",
    "bootstrap": "sparsescale.laws.uncertainty",
    "leave_one_scale_out": "sparsescale.laws.uncertainty",
    "kfold": "sparsescale.laws.uncertainty",
    "make_law": "sparsescale.laws.derived",
    "compare_parameter_counts": "sparsescale.laws.derived",
    "fit_table": "sparsescale.laws.cli",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparsescale.laws' has no attribute {name!r}")
