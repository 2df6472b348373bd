"""Preset configurations (YAML), loaded with `lmforge.config.load_config(preset=...)`."""
