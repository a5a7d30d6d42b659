"""The Linux download: the onedir bundle as a .tar.gz with a .desktop file and the icon.

    python packaging/linux/tarball.py dist/finetune-desk [--out dist]

writes `finetune-desk-<version>-linux-<machine>.tar.gz` holding `finetune-desk/` (the bundle),
`finetune-desk/finetune-desk.desktop`, `finetune-desk/finetune-desk.svg` and
`finetune-desk/install-desktop-entry.sh`, which puts the menu entry and the icon in the user's
folders with the path of wherever the folder was unpacked (a .desktop file needs an absolute
`Exec`). `make dist` runs it; tests/test_bundle.py checks what it writes. Prints the path.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

APP = "finetune-desk"
ROOT = Path(__file__).resolve().parents[2]

# Exec and Icon are rewritten by install-desktop-entry.sh to absolute paths.
DESKTOP_ENTRY = """\
[Desktop Entry]
Type=Application
Version=1.4
Name=Finetune Desk
GenericName=Language model fine-tuning
Comment=Fine-tune language models locally or on RunPod
Exec=finetune-desk
Icon=finetune-desk
Terminal=false
Categories=Development;
Keywords=LLM;LoRA;QLoRA;fine-tuning;training;
StartupWMClass=finetune-desk
"""

INSTALL_SCRIPT = """\
#!/bin/sh
# Adds Finetune Desk to the applications menu of this user (no root needed).
set -e
here="$(cd "$(dirname "$0")" && pwd)"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
mkdir -p "$apps" "$icons"
cp "$here/finetune-desk.svg" "$icons/finetune-desk.svg"
sed -e "s|^Exec=.*|Exec=\\"$here/finetune-desk\\"|" "$here/finetune-desk.desktop" \\
    > "$apps/finetune-desk.desktop"
echo "installed $apps/finetune-desk.desktop"
"""


def _add_text(tar: tarfile.TarFile, name: str, text: str, mode: int) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def write_tarball(bundle: Path, out: Path) -> Path:
    """Write the .tar.gz of `bundle` (the onedir folder) into `out`; returns its path."""
    if not (bundle / APP).is_file():
        raise SystemExit(f"{bundle} holds no {APP} executable: run `make dist` first")
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{APP}-{version(APP)}-linux-{platform.machine()}.tar.gz"
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=APP)
        _add_text(tar, f"{APP}/{APP}.desktop", DESKTOP_ENTRY, 0o644)
        _add_text(tar, f"{APP}/install-desktop-entry.sh", INSTALL_SCRIPT, 0o755)
        tar.add(ROOT / "resources" / "icon.svg", arcname=f"{APP}/{APP}.svg")
    return target


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the onedir folder (dist/finetune-desk)")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="where to write it")
    args = parser.parse_args(argv)
    print(write_tarball(args.bundle, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
