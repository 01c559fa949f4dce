"""Recipes: YAML lists of steps, validated with pydantic, run in self-describing run folders."""
