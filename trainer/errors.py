"""Turn what went wrong in a training process into one sentence a person can act on.

The trainer's `error` event carries the exception type and traceback for whoever debugs, and a
`message` for whoever runs the job: what happened and what to change. Expected problems (bad
config, bad data, a model that is not on disk, a job folder in the wrong state) are raised as
`TrainerInputError` and end the run with exit code 2; anything else is a crash (exit code 1)
whose sentence comes from `explain_exception`.

A full disk is recognised where it matters most, a checkpoint being saved: torch's writer
raises a bare RuntimeError without an errno, so `checkpoint_lost_to_full_disk` also looks at the
drive's free space. `FinalWordReserve` keeps a little room taken from the start of a run so the
final status still fits when the disk fills.

Torch-free: exceptions from the ML stack are recognised by class name and message, so this
module can be imported (and tested) without loading torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from trainer.protocol import (
    CHECKPOINTS_DIR,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    checkpoint_step,
    find_checkpoints,
)

__all__ = [
    "FinalWordReserve",
    "JobDirError",
    "ModelNotAvailableError",
    "TrainerInputError",
    "checkpoint_lost_to_full_disk",
    "exit_code_for",
    "explain_exception",
]


class TrainerInputError(Exception):
    """The run cannot start because of its input; the message says what to change (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class ModelNotAvailableError(TrainerInputError):
    """The model is neither a local folder nor reachable (offline, or no such repository)."""


class JobDirError(TrainerInputError):
    """The job folder is in a state this command must not touch (finished output, no checkpoint)."""


def _type_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes / contexts, outermost first (cycles cut)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Exceptions a damaged or torn file raises while it is loaded (by class name: torch-free).
_UNREADABLE_FILE = {"SafetensorError", "UnpicklingError", "BadZipFile", "JSONDecodeError"}


def _unreadable_file(exc: BaseException) -> bool:
    names = _type_names(exc)
    lower = str(exc).lower()
    return (
        bool(_UNREADABLE_FILE & names)
        or "pytorchstreamreader" in lower
        or (isinstance(exc, EOFError) and "ran out of input" in lower)
    )


def explain_exception(exc: BaseException, checkpoint: Path | None = None) -> str:
    """One or two sentences that say what went wrong and what to do about it.

    Args:
        exc: what was raised.
        checkpoint: the checkpoint folder being resumed from, while it may still be loading: a
            file that cannot be read is then that checkpoint's (named "checkpoint N"), not the
            model's.
    """
    if checkpoint is not None:
        for item in _chain(exc):
            if _unreadable_file(item):
                step = checkpoint_step(checkpoint)
                return (
                    f"checkpoint {step} ({checkpoint}) cannot be loaded ({_first_line(item)}); "
                    "it is damaged or was saved incompletely. Delete that checkpoint folder and "
                    "run --resume again to continue from the checkpoint before it."
                )
    for item in _chain(exc):
        sentence = _explain_one(item)
        if sentence:
            return sentence
    return (
        f"The trainer stopped with {type(exc).__name__}: {_first_line(exc)}. "
        "The traceback and the last log lines below show where; if the cause is not clear, "
        "retry with the same config to see whether it happens again."
    )


def exit_code_for(exc: BaseException) -> int:
    """2 for bad input (config, data, model not available), 1 for everything else."""
    if isinstance(exc, TrainerInputError):
        return EXIT_BAD_INPUT
    names = _type_names(exc)
    if {"ConfigFileError", "DataError"} & names:
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def _explain_one(exc: BaseException) -> str | None:
    names = _type_names(exc)
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, TrainerInputError) or {"ConfigFileError", "DataError"} & names:
        return text
    if "OutOfMemoryError" in names or "cuda out of memory" in lower or "out of memory" in lower:
        return (
            "The GPU ran out of memory. Lower training.per_device_batch_size (and raise "
            "training.gradient_accumulation_steps to keep the effective batch), enable "
            "training.gradient_checkpointing, shorten dataset.max_length, or use method 'qlora'."
        )
    if isinstance(exc, MemoryError):
        return (
            "The machine ran out of memory (RAM). Lower training.per_device_batch_size or "
            "dataset.max_length, or use a smaller model."
        )
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            "The disk is full. Free space in the job folder's drive, or lower "
            "training.save_total_limit so fewer checkpoints are kept."
        )
    if "OfflineModeIsEnabled" in names or "LocalEntryNotFoundError" in names:
        return (
            "A file the run needs is not on disk and offline mode is on (HF_HUB_OFFLINE=1). "
            "Download the model or dataset while online first, or point the config at a local "
            "folder."
        )
    if "GatedRepoError" in names:
        return (
            "The model repository is gated: accept its licence on huggingface.co and provide a "
            "Hugging Face token (HF_TOKEN) that has access."
        )
    if "RepositoryNotFoundError" in names:
        return (
            "The model repository was not found on the Hugging Face Hub. Check model.name_or_path "
            "(org/name) and, for a private repository, that HF_TOKEN has access."
        )
    if "RevisionNotFoundError" in names:
        return "The model revision does not exist. Check model.revision (branch, tag or commit)."
    if "bitsandbytes" in lower and ("ImportError" in names or "ModuleNotFoundError" in names):
        return (
            "QLoRA and 8-bit optimizers need the bitsandbytes package and a CUDA GPU. Install "
            "bitsandbytes, or use method 'lora' and optimizer 'adamw_torch'."
        )
    if "flash_attn" in lower or "flash attention" in lower or "flashattention" in lower:
        return (
            "flash_attention_2 is not available here (it needs the flash-attn package and a "
            "recent NVIDIA GPU). Set model.attn_implementation to 'sdpa' or 'auto'."
        )
    if ("generation" in lower and "chat template" in lower) or "assistant_masks" in lower:
        return (
            "The model's chat template cannot mark which tokens are the assistant's answers. "
            "Set dataset.train_on_completions_only to false, or use a model whose chat template "
            "has {% generation %} markers."
        )
    if "chat_template" in lower or "chat template" in lower:
        return (
            "The model's tokenizer has no chat template, so chat records cannot be turned into "
            "text. Use a chat/instruct model, or a dataset in 'text' or 'prompt_completion' format."
        )
    if "nccl" in lower or "gloo" in lower or "process group" in lower:
        return (
            "The processes of a multi-device run could not talk to each other. Check that every "
            "GPU is visible and healthy, or run with hardware.num_gpus 1."
        )
    if "cuda" in lower and (
        "driver" in lower or "no cuda gpus" in lower or "not available" in lower
    ):
        return (
            "CUDA is not usable in this environment. Check the GPU driver (nvidia-smi) or set "
            "hardware.device to 'cpu'."
        )
    if "ConnectionError" in names or "Timeout" in names or "ConnectTimeout" in names:
        return (
            "The Hugging Face Hub could not be reached. Check the network connection, or put the "
            "model on disk and run offline."
        )
    if "SafetensorError" in names or ("safetensors" in lower and "header" in lower):
        return (
            f"A model weights file cannot be read ({_first_line(exc)}); it is probably damaged or "
            "an incomplete download. Delete it and download the model again."
        )
    return None


# --------------------------------------------------------------------------------------------
# A full disk


_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# Below this much free space no checkpoint of any model fits (used when none was saved yet).
_MIN_FREE_FOR_A_CHECKPOINT = 1024 * 1024


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def _mb(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def checkpoint_lost_to_full_disk(exc: BaseException, job_dir: Path) -> str | None:
    """When `exc` ended a checkpoint save on a full disk: delete that torn checkpoint folder
    (its room is free again, and it must never be offered for a resume) and return the
    sentence for the final status ("disk full while saving checkpoint N ..."); else None.

    The save counts as ended by a full disk when the exception chain carries ENOSPC, or when
    the drive has less room than the newest complete checkpoint took (torch's writer reports
    a failed write as a RuntimeError without an errno).
    """
    complete = find_checkpoints(job_dir)
    newest = (checkpoint_step(complete[-1]) or 0, complete[-1]) if complete else None
    torn: tuple[int, Path] | None = None
    with contextlib.suppress(OSError):
        for child in (job_dir / CHECKPOINTS_DIR).iterdir():
            step = checkpoint_step(child)
            if step is None or not child.is_dir() or (newest and step <= newest[0]):
                continue
            if (child / "trainer_state.json").exists():
                continue
            if torn is None or step > torn[0]:
                torn = (step, child)
    if torn is None:
        return None
    try:
        free = shutil.disk_usage(job_dir).free
    except OSError:
        return None
    needed = _folder_bytes(newest[1]) if newest else _MIN_FREE_FOR_A_CHECKPOINT
    errnos = {getattr(item, "errno", None) for item in _chain(exc)}
    if not (_DISK_FULL_ERRNOS & errnos) and free >= max(needed, _MIN_FREE_FOR_A_CHECKPOINT):
        return None
    shutil.rmtree(torn[1], ignore_errors=True)
    then = (
        f"run --resume to continue from checkpoint {newest[0]}" if newest else "start the run again"
    )
    return (
        f"disk full while saving checkpoint {torn[0]}: the drive holding {job_dir} had "
        f"{_mb(free)} free, less than a checkpoint needs ({_mb(needed)}); the unfinished "
        f"checkpoint was deleted. Free space on that drive (or lower "
        f"training.save_total_limit), then {then}."
    )


class FinalWordReserve:
    """A file of `size` bytes taken at the start of a run and given back just before the final
    status is written, so a disk that filled meanwhile still has room for the trainer's last
    word (status event, status.json, the last console lines). Best effort: a disk already full
    at the start gets no reserve.
    """

    NAME = ".final-word.reserve"

    def __init__(self, job_dir: Path, size: int = 256 * 1024) -> None:
        self.path = job_dir / self.NAME
        try:
            with open(self.path, "wb") as fh:
                fh.write(b"\0" * size)  # real blocks: a sparse file would reserve nothing
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            self.release()

    def release(self) -> None:
        """Give the room back (idempotent)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
