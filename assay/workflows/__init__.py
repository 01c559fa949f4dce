"""Multi-step drivers built on the engines: MATES' staged training, mixture search, BiMix
fitting, PreSelect's model family, batches of proxies."""
