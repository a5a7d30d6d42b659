"""A wheelhouse and a trainer runtime set up from it, once per session.

`wheelhouse`: `pip download` of the trainer's requirements pinned by constraints.txt (torch's
CPU build: the package index's Linux torch wheels are multi-GB CUDA builds). Set
`FTDESK_TEST_WHEELHOUSE` to a folder already filled that way to skip the download.

`wheelhouse_runtime`: `finetune-desk runtime setup --wheelhouse` run twice, as a person whose
first attempt failed would: first from a copy of the wheelhouse without transformers (the torch
step succeeds, the requirements step fails), then from the whole wheelhouse, which resumes. The
facts of both attempts are kept for the tests (tests/test_runtime_setup.py) and the runtime
for the frozen app's training run (tests/test_bundle.py).

Use with `pytest_plugins = ["runtime_fixtures"]`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE_ENV = "FTDESK_TEST_WHEELHOUSE"


def _say(config: pytest.Config, line: str) -> None:
    """Print past the output capture (shown with -q too)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@contextlib.contextmanager
def shared_folder(
    factory: pytest.TempPathFactory, worker_id: str, name: str
) -> Iterator[tuple[Path, bool]]:
    """A folder every pytest-xdist worker of this run shares, held under a lock: (folder,
    whether it was made before). Made once per run, not once per worker."""
    base = factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / name
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / ".done"
        made_before = done.exists()
        yield root, made_before
        done.touch()


def torch_pin() -> str:
    """constraints.txt's torch version, as the CPU build."""
    text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    match = re.search(r"^torch==([\w.]+)$", text, re.MULTILINE)
    assert match, "constraints.txt pins no torch"
    return f"torch=={match.group(1)}+cpu"


@pytest.fixture(scope="session")
def wheelhouse(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config, worker_id: str
) -> Path:
    """A folder of wheels with everything the trainer runtime needs (see the module doc)."""
    given = os.environ.get(WHEELHOUSE_ENV)
    if given:
        return Path(given)
    from desktop.core.runtime_plan import runtime_requirements

    with shared_folder(tmp_path_factory, worker_id, "wheelhouse") as (root, made):
        folder = root / "wheels"
        if made:
            return folder
        pins = root / "torch-cpu.txt"
        pins.write_text(torch_pin() + "\n", encoding="utf-8")
        names = [re.split(r"[<>=!~ ]", r, maxsplit=1)[0] for r in runtime_requirements()]
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
             "--dest", str(folder), "-c", str(ROOT / "constraints.txt"), "-c", str(pins),
             *names],
            capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        _say(
            pytestconfig,
            f"\nwheelhouse: {len(list(folder.glob('*.whl')))} wheels, {size:.0f} MB, filled in "
            f"{time.monotonic() - started:.1f} s",
        )
        return folder


@dataclass
class SetUpRuntime:
    """A runtime set up by `runtime setup --wheelhouse`, with what its two attempts showed."""

    home: Path
    python: Path
    failed: subprocess.CompletedProcess[str]
    failed_state: dict[str, object]
    torch_inode_after_failure: int
    resumed: subprocess.CompletedProcess[str]
    torch_inode_after_resume: int
    setup_s: float
    resume_s: float


def runtime_env(home: Path, cache: Path) -> dict[str, str]:
    """The environment of a `finetune-desk` child with its own data folder and uv cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTDESK_")}
    env.update(FTDESK_HOME=str(home), UV_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`finetune-desk ARGS` as its own process (the source app)."""
    return subprocess.run(
        [sys.executable, "-m", "desktop.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def _torch_inode(venv: Path) -> int:
    found = sorted(venv.glob("lib/python*/site-packages/torch/__init__.py"))
    assert found, f"no torch in {venv}"
    return found[0].stat().st_ino


def _completed(data: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(
        [], int(str(data["returncode"])), str(data["stdout"]), str(data["stderr"])
    )


def _facts(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.fixture(scope="session")
def wheelhouse_runtime(
    tmp_path_factory: pytest.TempPathFactory,
    wheelhouse: Path,
    pytestconfig: pytest.Config,
    worker_id: str,
) -> SetUpRuntime:
    """The runtime, set up as the module doc says (a failed attempt, then a resumed one)."""
    with shared_folder(tmp_path_factory, worker_id, "runtime") as (base, made):
        facts_file = base / "facts.json"
        home, cache = base / "home", base / "uv-cache"
        venv = home / "runtime" / "venv"
        if not made:
            env = runtime_env(home, cache)
            partial = base / "partial-wheelhouse"
            partial.mkdir()
            for wheel in wheelhouse.glob("*.whl"):
                if not wheel.name.startswith("transformers-"):
                    (partial / wheel.name).symlink_to(wheel)
            started = time.monotonic()
            failed = run_cli(env, "runtime", "setup", "--wheelhouse", str(partial))
            setup_s = time.monotonic() - started
            state = json.loads((home / "runtime" / "setup.json").read_text(encoding="utf-8"))
            inode_failed = _torch_inode(venv)
            started = time.monotonic()
            resumed = run_cli(env, "runtime", "setup", "--wheelhouse", str(wheelhouse))
            resume_s = time.monotonic() - started
            assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
            _say(
                pytestconfig,
                f"\nruntime setup from the wheelhouse: failed attempt {setup_s:.1f} s, resumed "
                f"in {resume_s:.1f} s (doctor included); venv {venv}",
            )
            facts_file.write_text(
                json.dumps(
                    {
                        "failed": _facts(failed),
                        "failed_state": state,
                        "inode_failed": inode_failed,
                        "resumed": _facts(resumed),
                        "inode_resumed": _torch_inode(venv),
                        "setup_s": setup_s,
                        "resume_s": resume_s,
                    }
                ),
                encoding="utf-8",
            )
        facts = json.loads(facts_file.read_text(encoding="utf-8"))
    return SetUpRuntime(
        home=home,
        python=venv / "bin" / "python",
        failed=_completed(facts["failed"]),
        failed_state=facts["failed_state"],
        torch_inode_after_failure=facts["inode_failed"],
        resumed=_completed(facts["resumed"]),
        torch_inode_after_resume=facts["inode_resumed"],
        setup_s=facts["setup_s"],
        resume_s=facts["resume_s"],
    )
