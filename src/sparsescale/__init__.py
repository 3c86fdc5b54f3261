"""sparsescale: sparse pre-training scaling-law studies, from tokens to report."""

__version__ = "0.1.0"
