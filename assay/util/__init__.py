"""Small utilities every layer may use: files, hashing, output guards, progress."""
