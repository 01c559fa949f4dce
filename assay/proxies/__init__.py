"""Proxy language models: tokenizers, presets, packed mixture data, training, the runs table."""
