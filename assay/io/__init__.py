"""Reading and writing corpora and side-car score tables."""
