"""Custom import-linter contract types for this project (registered in `pyproject.toml`)."""
