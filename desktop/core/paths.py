"""Where the app keeps its data. Standard library only: the window needs it before its first
paint, before pydantic or anything else heavy is imported."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["data_home"]


def data_home() -> Path:
    """The app's data folder: `$FTDESK_HOME`, else the platform's user data folder."""
    env = os.environ.get("FTDESK_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "FinetuneDesk"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "FinetuneDesk"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "finetune-desk"
