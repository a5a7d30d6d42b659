"""The presets and the icon are package data: `resource_path` finds them through
importlib.resources, and a wheel built from the repository carries them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_PRESETS = sorted(p.name for p in (REPO / "resources" / "presets").glob("*.json"))


def test_resource_path_finds_every_preset_and_the_icon() -> None:
    from desktop.core.config_io import list_presets, presets_dir
    from desktop.core.paths import resource_path

    assert len(SOURCE_PRESETS) >= 5
    folder = resource_path("presets")
    assert sorted(p.name for p in folder.glob("*.json")) == SOURCE_PRESETS
    assert presets_dir() == folder
    assert sorted(f"{p.name}.json" for p in list_presets()) == SOURCE_PRESETS
    assert resource_path("icon.svg").read_bytes().lstrip().startswith(b"<")


def test_resource_path_reads_through_the_resources_package() -> None:
    from importlib import resources

    from desktop.core.paths import resource_path

    through_package = Path(str(resources.files("resources").joinpath("presets")))
    assert resource_path("presets") == through_package


def test_a_missing_resource_names_the_places_tried() -> None:
    from desktop.core.paths import resource_path

    with pytest.raises(FileNotFoundError, match=r"'no-such\.json' is missing \(looked in .*"):
        resource_path("no-such.json")


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked and new (not ignored) files, so the build leaves no trace here."""
    names = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


@pytest.mark.slow
def test_a_wheel_carries_the_presets_and_the_icon(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "src")
    out = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    proc = subprocess.run(
        [*pip, "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("finetune_desk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "resources/__init__.py" in names
    assert "resources/icon.svg" in names
    assert {n for n in names if n.startswith("resources/presets/")} == {
        f"resources/presets/{n}" for n in SOURCE_PRESETS
    }
