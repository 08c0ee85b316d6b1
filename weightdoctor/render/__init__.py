"""Output: Rich tables and maps for people, JSON for machines, both from the same dataclasses."""
