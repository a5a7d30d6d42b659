"""The real keychain end to end: a key set with `finetune-desk keys set` before a full run is
stored in the Secret Service, never printed, and appears in no file under FTDESK_HOME."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import ROOT, cli, cli_env, job_id_from, write_config

pytest_plugins = ["keychain"]

SENTINEL = "hf_sentinel_4b1d2e9c7a6f5e3d"


def keys(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "desktop.cli", "keys", *args],
        env=cli_env(home),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.keychain
def test_a_keychain_secret_set_before_a_run_reaches_no_file(
    real_keychain, tmp_path: Path, demo_template: Path
) -> None:
    home = tmp_path / "home"
    stored = keys(home, "set", "hf_token", stdin=SENTINEL + "\n")
    assert stored.returncode == 0, stored.stderr
    assert real_keychain.lookup("finetune-desk", "hf_token") == SENTINEL
    status = keys(home, "status", "hf_token")
    assert status.returncode == 0, status.stderr
    assert "Secret Service" in status.stdout
    assert SENTINEL not in status.stdout + status.stderr + stored.stdout + stored.stderr

    config = write_config(tmp_path / "cfg", demo_template, max_steps=4, save_steps=2)
    done = cli(home, "run", str(config), "--follow")
    assert done.returncode == 0, done.stdout + done.stderr
    job_dir = home / "jobs" / job_id_from(done.stdout)
    assert (job_dir / "output").is_dir()
    assert SENTINEL not in done.stdout + done.stderr

    files = [p for p in home.rglob("*") if p.is_file()]
    assert len(files) > 10  # the store, the job dir, the checkpoints, the output
    assert [p for p in files if SENTINEL.encode() in p.read_bytes()] == []

    deleted = keys(home, "delete", "hf_token")
    assert deleted.returncode == 0, deleted.stderr
    assert real_keychain.lookup("finetune-desk", "hf_token") is None
