"""Utilities every stage shares, one copy each: atomic writes, output folders, processes."""
