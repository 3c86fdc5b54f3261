"""sparsescale: sparse pre-training scaling-law studies, from tokens to report."""

__version__ = "0.2.0"
