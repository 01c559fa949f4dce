"""The built-in steps, one file each; importing this package registers them all, in the order
in which documentation and messages list them."""

# ruff: noqa: I001, F401  (the order of registration is the order of the list)
from assay.recipe.steps import demo_corpus, score, select, stats, tokenizer
from assay.recipe.steps import train_proxy, eval, betr, preselect, compare
from assay.recipe.steps import cluster, search, bimix, mixture, mass, mates, dsir, decontaminate
from assay.recipe.steps import dedup, ngram_lm, materialize, export
