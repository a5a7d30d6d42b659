"""The pod agent's file readers: paths kept inside the job folder, hashes, the event stream.

Standard library only, like `trainer.agent` (whose HTTP layer answers with what these read).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["artifact_files", "inside", "last_event_seq", "read_events", "sha256_file", "unpack"]


def inside(folder: Path, path: Path) -> bool:
    """`path`, symlinks resolved, lies within `folder`."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def sha256_file(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack(bundle: Path, dest: Path) -> None:
    """Unpack a `.tar.gz` of plain files into `dest` (replaced).

    Raises:
        ValueError: naming the first member that is absolute, climbs with `..`, or is not a
            plain file or folder (a link could point anywhere).
    """
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(bundle, "r:gz") as tar:
        for member in tar.getmembers():
            if (
                member.name.startswith("/")
                or ".." in Path(member.name).parts
                or not (member.isfile() or member.isdir())
            ):
                raise ValueError(
                    f"{bundle.name}: member {member.name!r} is not a plain file inside the "
                    "bundle; rebuild the bundle"
                )
        tar.extractall(dest)  # every member was checked above


def read_events(path: Path, since_seq: int, max_bytes: int) -> dict[str, Any]:
    """Whole lines of an `events.jsonl` after `since_seq`, at most `max_bytes` of them."""
    events: list[Any] = []
    last_seq, size, more = since_seq, 0, False
    if not path.exists():
        return {"events": events, "last_seq": last_seq, "more": more}
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # a torn last line waits for the next request
            try:
                event = json.loads(line)
                seq = int(event["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            if seq <= since_seq:
                continue
            if size + len(line) > max_bytes and events:
                more = True
                break
            events.append(event)
            size += len(line)
            last_seq = seq
    return {"events": events, "last_seq": last_seq, "more": more}


def last_event_seq(path: Path) -> int | None:
    """The seq of the last whole line of an `events.jsonl` (None when there is none)."""
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
        lines = handle.read().split(b"\n")[:-1]
    for line in reversed(lines):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def artifact_files(job_dir: Path) -> Iterator[Path]:
    """The regular files under `output/` and `checkpoints/`; symlinks are never followed."""
    for top in ("output", "checkpoints"):
        root = job_dir / top
        if root.is_symlink() or not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not (Path(folder) / d).is_symlink())
            for name in sorted(files):
                path = Path(folder) / name
                if not path.is_symlink() and path.is_file():
                    yield path
