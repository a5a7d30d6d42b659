"""Whether a checkpoint's files can be loaded, checked before the Trainer loads them.

A checkpoint is "complete" once its `trainer_state.json` is written (`trainer.protocol`), but a
file in it can still be torn (a crash or a full disk mid-write) or damaged later. Loading such
a file fails deep inside the Trainer with an error about "a weights file", after the model is
already half restored. Checking the files first lets `--resume` walk back to the newest
checkpoint that loads and say which one it skipped and why.

`latest_loadable_checkpoint` is the one rule for where a resume starts: the trainer's
`--resume` follows it, and the app (`desktop.core.job_dirs`) shows and records the same point,
so the two never disagree about a damaged checkpoint.

The checks read what loading reads without building tensors: a safetensors file's header and
its length, a torch file's zip directory and the CRC of every member, JSON files whole.
Torch-free, and part of the trainer contract the app imports (standard library and
`trainer.protocol` only).

Reading every member's CRC reads the whole file (an optimizer's state is tens of GB on a full
fine-tune), so only the resume itself does (`thorough=True`). A look that merely reports where
a resume would start (`finetune-desk show`) passes `thorough=False`: the zip directory and that
every member lies within the file, which finds a torn file but not a flipped byte in a member.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import NamedTuple

from trainer.protocol import checkpoint_step, find_checkpoints

__all__ = ["ResumePoint", "SkippedCheckpoint", "checkpoint_problem", "latest_loadable_checkpoint"]

# torch.save writes a zip archive; a file from before torch 1.6 is a bare pickle.
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_PICKLE_PROTOCOL = b"\x80"


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"is torn ({size} bytes, shorter than a safetensors header)"
        header_len = int.from_bytes(head, "little")
        if header_len > size - 8:
            return f"is damaged or torn (its header claims {header_len} bytes; the file has {size})"
        try:
            header = json.loads(fh.read(header_len))
        except ValueError:
            return "is damaged (its safetensors header is not valid JSON)"
    if not isinstance(header, dict):
        return "is damaged (its safetensors header is not a table of tensors)"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    expected = 8 + header_len + max(ends, default=0)
    if expected != size:
        return f"is torn (its header describes {expected} bytes; the file has {size})"
    return None


def _torch_file_problem(path: Path, thorough: bool) -> str | None:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(1) == _PICKLE_PROTOCOL:
                return None  # the legacy format: no directory or checksum to check
        return "is damaged or torn (not a readable torch file)"
    try:
        with zipfile.ZipFile(path) as archive:
            if not thorough:
                return _zip_extent_problem(archive, path.stat().st_size)
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as exc:
        return f"is damaged or torn ({exc})"
    return f"is damaged (a checksum mismatch in {bad})" if bad else None


def _zip_extent_problem(archive: zipfile.ZipFile, size: int) -> str | None:
    """Whether every member the zip directory lists lies within the file (its local header
    and data); reads only the directory, never the members' data."""
    for info in archive.infolist():
        # A local header is 30 bytes plus the name (its extra field is not counted: unknown).
        end = info.header_offset + 30 + len(info.filename.encode()) + info.compress_size
        if end > size:
            return f"is torn ({info.filename} ends past the file's {size} bytes)"
    return None


def _json_problem(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "is damaged or torn (not valid JSON)"
    if path.name == "trainer_state.json" and not (
        isinstance(data, dict) and isinstance(data.get("global_step"), int)
    ):
        return "is damaged (no global_step in it)"
    return None


def checkpoint_problem(folder: Path, *, thorough: bool = True) -> str | None:
    """Why the checkpoint in `folder` cannot be loaded (its first bad file and what is wrong
    with it, e.g. "adapter_model.safetensors is torn (...)"), or None when every file checks.

    `thorough=False` skips the CRC of torch files' members, which reads them whole (see the
    module docstring): for a report, never for the resume itself.
    """
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        try:
            if suffix == ".safetensors":
                why = _safetensors_problem(path)
            elif suffix in _TORCH_SUFFIXES:
                why = _torch_file_problem(path, thorough)
            elif suffix == ".json":
                why = _json_problem(path)
            else:
                continue
        except OSError as exc:
            why = f"cannot be read ({exc.strerror or exc})"
        if why:
            return f"{path.relative_to(folder)} {why}"
    return None


class SkippedCheckpoint(NamedTuple):
    """A complete checkpoint a resume passes over because a file in it does not load."""

    step: int
    path: Path
    problem: str

    def describe(self) -> str:
        """One phrase for the logs and the app: "checkpoint 20 (checkpoint-20): <problem>"."""
        return f"checkpoint {self.step} ({self.path.name}): {self.problem}"


class ResumePoint(NamedTuple):
    """Where `--resume` continues: `step` and `path` of the newest checkpoint that loads (both
    None when none does), and each newer complete checkpoint skipped, newest first."""

    step: int | None
    path: Path | None
    skipped: tuple[SkippedCheckpoint, ...]

    def describe(self) -> str:
        """What a person reads: "<path>; skipped checkpoint 20 (checkpoint-20): why" or, when
        none loads, "no checkpoint loads: ..." ("no complete checkpoint" when none is there)."""
        skipped = "; ".join(f"skipped {s.describe()}" for s in self.skipped)
        if self.path is None:
            return f"no checkpoint loads: {skipped}" if skipped else "no complete checkpoint"
        return str(self.path) + (f"; {skipped}" if skipped else "")


def latest_loadable_checkpoint(job_dir: Path, *, thorough: bool = True) -> ResumePoint:
    """The checkpoint `trainer run --resume` continues from: the newest complete one (see
    `trainer.protocol.find_checkpoints`) whose files all check (`checkpoint_problem`).

    Each newer complete checkpoint is checked and named in `skipped` with what is wrong; older
    ones are not read (a checkpoint's files can be gigabytes). Unpacks as (step, path, skipped).
    `thorough=False` (a report, not the resume) skips reading torch files whole; see
    `checkpoint_problem`.
    """
    skipped: list[SkippedCheckpoint] = []
    for path in reversed(find_checkpoints(job_dir)):
        step = checkpoint_step(path) or 0
        problem = checkpoint_problem(path, thorough=thorough)
        if problem is None:
            return ResumePoint(step, path, tuple(skipped))
        skipped.append(SkippedCheckpoint(step, path, problem))
    return ResumePoint(None, None, tuple(skipped))
