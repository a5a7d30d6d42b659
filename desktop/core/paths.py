"""Where the app keeps its data. Standard library only: the window needs it before its first
paint, before pydantic or anything else heavy is imported."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

__all__ = ["data_home", "resource_path"]


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


def resource_path(name: str) -> Path:
    """The app's data file or folder `name` ("presets", "icon.svg"), as a real path.

    Read through `importlib.resources` on the `resources` package, so a source checkout, an
    installed wheel and a PyInstaller bundle find it the same way. Without that package (a
    bundle or install that left it out), the `resources/` folder next to the frozen executable's
    data or the source tree is used.

    Raises:
        FileNotFoundError: neither place holds `name` (the message names both).
    """
    tried: list[str] = []
    try:
        found = resources.files("resources").joinpath(name)
    except ModuleNotFoundError:
        found = None
    if found is not None:
        # A package on the file system (checkout, wheel, PyInstaller) gives a real path;
        # a zipped one does not, and the fallback below is the honest answer then.
        path = Path(str(found))
        if path.exists():
            return path
        tried.append(str(path))
    bundle = getattr(sys, "_MEIPASS", None)
    root = Path(bundle) if bundle else Path(__file__).resolve().parents[2]
    path = root / "resources" / name
    if path.exists():
        return path
    tried.append(str(path))
    raise FileNotFoundError(
        f"the app's resource {name!r} is missing (looked in {' and '.join(tried)}); "
        "reinstall Finetune Desk"
    )
