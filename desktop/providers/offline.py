"""The environment that keeps a trainer off the network (offline mode), in one place.

Stdlib only: the app's job service, the CLI and every provider import it from here.
"""

from __future__ import annotations

__all__ = ["OFFLINE_ENV"]

# What the trainer gets in offline mode: every Hugging Face library and W&B stay off the
# network, and nothing phones home.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "offline",
    "DO_NOT_TRACK": "1",
}
