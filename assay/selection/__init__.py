"""Scorers (one module each) and selection policies (`assay.selection.select`)."""

from assay.selection.base import (
    Scorer,
    available_scorers,
    load_scorer,
    make_scorer,
    register_scorer,
)

__all__ = ["Scorer", "available_scorers", "load_scorer", "make_scorer", "register_scorer"]
