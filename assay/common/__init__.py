"""Types and numerics the engine packages share: mixtures, token caches, tokenizers, language
models and their losses, embeddings, benchmark tasks and targets."""
