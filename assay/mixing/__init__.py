"""Mixtures of domains and (later) the searches and scaling laws that choose them."""

from assay.common.mixture import Mixture, as_mixture

__all__ = ["Mixture", "as_mixture"]
