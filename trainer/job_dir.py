"""The job folder's rules for a run: where the output goes, which checkpoints count, when a
run must not touch the folder.

Shared by the run (`trainer.run`) and the multi-process supervisor (`trainer.launch`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.protocol import CHECKPOINTS_DIR, EXIT_BAD_INPUT, checkpoint_step, read_status
from trainer.protocol import find_checkpoints as _complete_checkpoints

__all__ = ["OUTPUT_DIR", "PARTIAL_OUTPUT", "find_checkpoints", "refuse_job_dir"]

OUTPUT_DIR = "output"
# The output is written here and renamed to OUTPUT_DIR once whole.
PARTIAL_OUTPUT = ".output.partial"


def find_checkpoints(job_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints in `job_dir/checkpoints`, oldest first.

    The same checkpoints as `trainer.protocol.find_checkpoints` (the app's resume uses that one,
    so it never offers a resume this trainer would refuse), with their steps.
    """
    return [(checkpoint_step(path) or 0, path) for path in _complete_checkpoints(job_dir)]


def _keeps_no_checkpoints(job: Path) -> bool:
    """Whether the job's config.json turns checkpointing off (read as plain JSON: the
    config's own errors are reported where it is loaded)."""
    try:
        data = json.loads((job / "config.json").read_text(encoding="utf-8"))
        return bool(data["training"]["save_total_limit"] == 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def refuse_job_dir(job: Path, resume: bool) -> int | None:
    """EXIT_BAD_INPUT (said on stderr) when this run must not touch the job folder; else None.

    Refused: a missing folder, a finished one (output/ exists), checkpoints without `--resume`
    (a cancelled or failed job: starting over would mix two runs), and `--resume` without a
    complete checkpoint. Nothing is written: the job's events and final word stay as they were.
    """
    if not job.is_dir():
        print(f"{job}: no such job folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (job / OUTPUT_DIR).exists():
        previous = read_status(job)
        state = previous.state if previous else "unknown"
        print(
            f"{job}: this job already finished (state {state}) and its output/ exists; "
            "refusing to train again and overwrite it. Start a new job folder instead.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    checkpoints = find_checkpoints(job)
    if resume and not checkpoints and _keeps_no_checkpoints(job):
        print(
            f"{job}: this job keeps no checkpoints (training.save_total_limit is 0), so it "
            "cannot be resumed; start it again in a new job folder.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if resume and not checkpoints:
        print(
            f"--resume was given but {job / CHECKPOINTS_DIR} holds no complete checkpoint; "
            "nothing to resume from. Run without --resume in a new job folder to start over.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if not resume and checkpoints:
        print(
            f"{job / CHECKPOINTS_DIR} already holds checkpoints (newest: step "
            f"{checkpoints[-1][0]}); run with --resume to continue from there, or use a new "
            "job folder to start over.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return None
