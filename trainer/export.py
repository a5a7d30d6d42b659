"""`python -m trainer export --job-dir DIR ...`: a trained job handed on, after the fact.

    python -m trainer export --job-dir DIR [--checkpoint N] [--merge] [--dtype fp32|bf16|fp16]
        [--out DIR] [--push ORG/NAME] [--private | --public]

`--merge` loads the base model in the chosen dtype, attaches the job's adapter (its `output/`,
or `checkpoints/checkpoint-N` with `--checkpoint N`), merges it into the weights and saves a
plain transformers model: config, tokenizer, safetensors and a model card (`README.md`) holding
the training config and the final metrics. It goes to `--out`, by default the job's
`output/merged/` (`output/merged-checkpoint-N/` for a checkpoint), written beside it and renamed
into place when whole, so a half-written folder never looks like a model.

`--push ORG/NAME` uploads the merged folder (or, without `--merge`, the adapter with a model
card) to the Hugging Face Hub: private unless `--public`, the token from `HF_TOKEN` (the app
passes it from the keychain as the child's environment, never a file). The repository name is
checked before anything is loaded or sent, and offline mode (`HF_HUB_OFFLINE=1`) refuses
before any request.

Output: one JSON object per line on stdout. `{"progress": {"stage": ..., "done": i, "total":
n, "message": ...}}` while it works, then the report `{"ok": true, "out": ..., "pushed": ...,
"url": ..., "files": [...]}`; a refusal is `{"ok": false, "error": "one sentence"}` with exit
code 2 (bad input) or 1 (it failed). The app reads it through
`desktop.core.runtime.TrainerRuntime.run_json`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from trainer.checkpoint_check import checkpoint_problem
from trainer.protocol import CHECKPOINTS_DIR, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

__all__ = ["ExportError", "main", "model_card"]

OUTPUT = "output"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class ExportError(Exception):
    """A refusal or failure with one sentence for the person; `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def _say(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def _progress(stage: str, done: int, total: int, message: str) -> None:
    _say({"progress": {"stage": stage, "done": done, "total": total, "message": message}})


def check_repo_id(repo: str) -> str:
    """`repo` when it is a valid Hub `org/name`.

    Raises:
        ExportError: it is not (the sentence shows the value and the rule).
    """
    value = repo.strip()
    if not _REPO_ID.match(value) or ".." in value or "--" in value or value.endswith((".", "-")):
        raise ExportError(
            f"--push {repo!r} is not a Hub repository name: give org/name (letters, digits, "
            "'-', '_', '.', at most 96 characters each, no '--' or '..')"
        )
    return value


def _read_config(job: Path) -> dict[str, Any]:
    """The job's config as JSON data, its relative paths resolved against the job folder."""
    from trainer.config import load_config

    path = job / "config.json"
    try:
        return load_config(path).model_dump(mode="json")
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} cannot be read ({exc}): is {job} a job folder?") from exc


def _source(job: Path, checkpoint: int | None) -> Path:
    """The folder holding the adapter (or full model) to export."""
    if checkpoint is None:
        folder = job / OUTPUT
        if not (folder / "training_summary.json").is_file():
            raise ExportError(
                f"{job.name} has no finished output ({folder}): export a completed job, or "
                "pick one of its checkpoints with --checkpoint N"
            )
        return folder
    folder = job / CHECKPOINTS_DIR / f"checkpoint-{checkpoint}"
    if not folder.is_dir():
        found = sorted(
            int(p.name.split("-", 1)[1])
            for p in (job / CHECKPOINTS_DIR).glob("checkpoint-*")
            if p.name.split("-", 1)[1].isdigit()
        )
        raise ExportError(
            f"{job.name} has no checkpoint {checkpoint}; it has: "
            f"{', '.join(map(str, found)) or 'none'}"
        )
    problem = checkpoint_problem(folder, thorough=False)
    if problem:
        raise ExportError(f"checkpoint {checkpoint} cannot be loaded: {problem}")
    return folder


def _metrics(source: Path) -> dict[str, Any]:
    """The final metrics: the summary's loss and steps, and the last eval loss logged."""
    found: dict[str, Any] = {}
    summary = source / "training_summary.json"
    state = source / "trainer_state.json"
    history: list[dict[str, Any]] = []
    for path in (summary, state):
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            history = data.get("log_history") or history
            if path is summary:
                found["steps"] = data.get("steps")
                found["final_train_loss"] = data.get("final_loss")
            else:
                found["steps"] = data.get("global_step")
    for entry in history:
        for key in ("loss", "eval_loss", "mean_token_accuracy", "eval_mean_token_accuracy"):
            if key in entry:
                found["final_train_loss" if key == "loss" else f"final_{key}"] = entry[key]
    return {k: v for k, v in found.items() if v is not None}


def model_card(config: dict[str, Any], metrics: dict[str, Any], *, merged: bool) -> str:
    """The README.md of an exported model: base, method, the training config, final metrics."""
    base = str(config.get("model", {}).get("name_or_path", ""))
    hub_base = base if _REPO_ID.match(base) and not Path(base).exists() else None
    front = ["---", "library_name: " + ("transformers" if merged else "peft")]
    if hub_base:
        front.append(f"base_model: {hub_base}")
    front += ["tags:", "- finetune-desk", f"- {config.get('method', 'lora')}", "---", ""]
    name = config.get("name") or "fine-tuned model"
    kind = "the base model with the adapter merged in" if merged else "a LoRA adapter"
    lines = [
        f"# {name}",
        "",
        f"Fine-tuned with Finetune Desk ({config.get('method', '?')}) from `{base}`: {kind}.",
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[
            f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items()
        ],
        "",
        "## Training config",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(front + lines)


def _merge(config: dict[str, Any], source: Path, out: Path, dtype: str) -> list[str]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_cfg = config.get("model", {})
    base_path = str(model_cfg.get("name_or_path"))
    _progress("merge", 0, 4, f"loading the base model {base_path} in {dtype}")
    base = AutoModelForCausalLM.from_pretrained(
        base_path,
        revision=model_cfg.get("revision"),
        trust_remote_code=bool(model_cfg.get("trust_remote_code")),
        dtype=getattr(torch, _DTYPES[dtype]),
    )
    _progress("merge", 1, 4, f"attaching the adapter from {source}")
    merged = PeftModel.from_pretrained(base, str(source)).merge_and_unload()
    _progress("merge", 2, 4, "saving the merged weights")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    merged.save_pretrained(str(partial), safe_serialization=True)
    tokenizer_from = source if (source / "tokenizer_config.json").is_file() else Path(base_path)
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(str(partial))
    _progress("merge", 3, 4, "writing the model card")
    (partial / "README.md").write_text(
        model_card(config, _metrics(source), merged=True),
        encoding="utf-8",
    )
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, out)
    _progress("merge", 4, 4, f"merged model in {out}")
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def _push(folder: Path, repo: str, *, private: bool, message: str) -> str:
    from huggingface_hub import HfApi

    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise ExportError(
            "pushing needs a Hugging Face token with write access: store it with "
            "`finetune-desk keys set hf_token` (or Settings → Keys)"
        )
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    _progress("push", 0, 2, f"creating {repo} ({'private' if private else 'public'})")
    try:
        url = str(api.create_repo(repo, private=private))
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) != 409:
            raise
        # It exists, and the Hub keeps its visibility: never publish into a public repo
        # behind a person's back who asked for a private one.
        if private and not api.model_info(repo).private:
            raise ExportError(
                f"{repo} exists and is public: pushing there would publish this model; push "
                "with --public to do that, or choose another name"
            ) from exc
        url = f"{api.endpoint}/{repo}"
    _progress("push", 1, 2, f"uploading {len(files)} files ({size} bytes) to {repo}")
    api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=message)
    _progress("push", 2, 2, f"pushed to {url}")
    return str(url)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer export",
        description="Merge a job's adapter into its base model and/or push it to the Hub.",
    )
    p.add_argument("--job-dir", required=True, type=Path, help="the job folder")
    p.add_argument("--checkpoint", type=int, help="export this checkpoint's step, not the output")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base model")
    p.add_argument("--dtype", default="fp32", help="merged weights' dtype: fp32, bf16 or fp16")
    p.add_argument("--out", type=Path, help="where the merged model goes")
    p.add_argument("--push", metavar="ORG/NAME", help="upload to this Hub repository")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True)
    vis.add_argument("--public", dest="private", action="store_false")
    return p


def run(ns: argparse.Namespace) -> dict[str, Any]:
    """Do the export `ns` asks for; returns the report (see the module docstring)."""
    job: Path = ns.job_dir.resolve()
    repo = check_repo_id(ns.push) if ns.push else None
    if ns.dtype not in _DTYPES:
        raise ExportError(f"--dtype {ns.dtype!r} is not one of {', '.join(_DTYPES)}")
    if not ns.merge and not repo:
        raise ExportError("nothing to do: give --merge, --push ORG/NAME, or both")
    if repo and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ExportError(
            f"offline mode is on: nothing was sent to the Hub; turn offline mode off to push "
            f"to {repo}"
        )
    config = _read_config(job)
    source = _source(job, ns.checkpoint)
    is_adapter = (source / "adapter_config.json").is_file()
    if ns.merge and not is_adapter:
        raise ExportError(
            f"{source} holds a full model (method {config.get('method')!r}), not an adapter: "
            "there is nothing to merge; push it without --merge"
        )
    report: dict[str, Any] = {"ok": True, "out": None, "pushed": None, "url": None, "files": []}
    folder = source
    if ns.merge:
        default = "merged" if ns.checkpoint is None else f"merged-checkpoint-{ns.checkpoint}"
        out = (ns.out or job / OUTPUT / default).resolve()
        report["files"] = _merge(config, source, out, ns.dtype)
        report["out"] = str(out)
        folder = out
    if repo:
        message = f"{config.get('name') or job.name} (Finetune Desk export)"
        if ns.merge:
            report["url"] = _push(folder, repo, private=ns.private, message=message)
        else:
            # The adapter goes with its model card; the job's own folder is left untouched.
            with tempfile.TemporaryDirectory(prefix="ftdesk-export-") as staging:
                stage = Path(staging) / "adapter"
                shutil.copytree(
                    source,
                    stage,
                    ignore=shutil.ignore_patterns(
                        "optimizer.pt", "scheduler.pt", "rng_state*.pth", "training_args.bin"
                    ),
                )
                (stage / "README.md").write_text(
                    model_card(config, _metrics(source), merged=False), encoding="utf-8"
                )
                report["url"] = _push(stage, repo, private=ns.private, message=message)
        report["pushed"] = repo
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer export ...`; returns the exit code (0, 1 failed, 2 bad input)."""
    ns = _parser().parse_args(argv)
    try:
        report = run(ns)
    except ExportError as exc:
        _say({"ok": False, "error": str(exc)})
        return exc.code
    except Exception as exc:  # the trainer's last word is one JSON line, then the traceback
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(exc, HfHubHTTPError):
            status = getattr(exc.response, "status_code", None)
            why = str(exc).splitlines()[0]
            if status in (401, 403):
                why = (
                    f"the Hub refused the token ({status}): store a token with write access "
                    "with `finetune-desk keys set hf_token`"
                )
            _say({"ok": False, "error": f"the push failed: {why}"})
            return EXIT_FAILED
        _say({"ok": False, "error": f"the export failed: {type(exc).__name__}: {exc}"})
        raise
    _say(report)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
