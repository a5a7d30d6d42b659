"""Shared fixtures: a tiny demo model made once per test session, isolated data folders."""

from __future__ import annotations

import os

# Qt without a screen, and deterministic, quiet, offline ML libraries in every test.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
