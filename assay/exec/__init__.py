"""Running per-shard tasks over a corpus: in process, a local pool, or Ray."""
