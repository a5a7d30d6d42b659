"""`finetune-desk clusters add|list|test|remove` and `run --provider slurm --cluster NAME`
against a real single-node Slurm cluster over a real sshd (`tests/slurm_cluster.py`); elsewhere
the cluster tests skip with the reason (fail under `FTDESK_REQUIRE_SLURM=1`). The flags' own
checks need no cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, SshServer

from desktop.cli import build_parser, main
from desktop.cli.slurm_flags import slurm_settings
from desktop.core.errors import ConfigError
from desktop.models import ClusterProfile, Settings, SlurmOptions, load_settings

pytest_plugins = ["slurm_cluster"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def add_args(ssh: SshServer, work: Path, *extra: str) -> list[str]:
    """`clusters add lab ...` for the test cluster: this host over the loopback sshd; `extra`
    flags come last (a repeated flag's last value wins)."""
    args = {
        "--host": "127.0.0.1",
        "--user": "root",
        "--port": str(ssh.port),
        "--work-dir": str(work),
        "--python": sys.executable,
        "--key-file": str(ssh.client_key),
        "--known-hosts": str(ssh.known_hosts),
        "--partition": "debug",
        "--time": "10:00",
    }
    return ["clusters", "add", "lab", *[x for pair in args.items() for x in pair], *extra]


def with_lab(*args: str) -> Settings:
    ns = build_parser().parse_args(["run", "config.json", *args])
    profile = ClusterProfile(host="h", user="u", work_dir="/scratch", partition="gpu")
    return slurm_settings(ns, Settings(slurm=SlurmOptions(clusters={"lab": profile})))


def test_slurm_flags_become_this_runs_options() -> None:
    options = with_lab(
        "--provider", "slurm", "--cluster", "lab", "--partition", "debug", "--nodes", "2",
        "--tasks-per-node", "4", "--gpus-per-node", "4", "--time", "1-12:00",
    ).slurm  # fmt: skip
    assert (options.cluster, options.partition, options.nodes) == ("lab", "debug", 2)
    assert (options.tasks_per_node, options.gpus_per_node, options.time_limit) == (4, 4, "1-12:00")
    # No flag: the saved cluster is chosen and its defaults stand.
    plain = with_lab("--provider", "slurm").slurm
    assert (plain.cluster, plain.partition, plain.nodes, plain.time_limit) == ("lab", None, 1, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--nodes", "2"), "run: --nodes only apply with --provider slurm"),
        (
            ("--provider", "runpod", "--cluster", "lab"),
            "--cluster only apply with --provider slurm",
        ),
        (("--provider", "slurm", "--nodes", "0"), "--nodes '0': give a whole number of at least 1"),
        (("--provider", "slurm", "--tasks-per-node", "two"), "--tasks-per-node 'two'"),
        (
            ("--provider", "slurm", "--time", "4h"),
            "--time: time limit '4h' is not a Slurm time: use MM, HH:MM:SS or D-HH:MM",
        ),
        (("--provider", "slurm", "--cluster", "hpc"), "no cluster named 'hpc' \\(known: lab\\)"),
    ],
)
def test_slurm_bad_flags_are_refused_naming_the_flag(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        with_lab(*args)


def test_slurm_cli_says_one_sentence_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
    config = tmp_path / "config.json"
    config.write_text("{}", encoding="utf-8")
    for args, said in (
        (["--provider", "slurm", "--cluster", "hpc"], "error: run --cluster: no cluster named "
         "'hpc' (known: none); add one with: finetune-desk clusters add NAME"),
        (["--provider", "slurm", "--time", "soon"], "error: --time: time limit 'soon' is not a "
         "Slurm time"),
        (["--partition", "debug"], "error: run: --partition only apply with --provider slurm"),
    ):  # fmt: skip
        assert main(["run", str(config), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(said) and err.count("\n") == 1, err
    assert main(["clusters", "test", "hpc"]) == 2
    assert "error: clusters test: no cluster named 'hpc'" in capsys.readouterr().err
    assert not (tmp_path / "home" / "jobs").exists() or not any(
        (tmp_path / "home" / "jobs").iterdir()
    )


def test_slurm_clusters_add_refuses_a_bad_profile_naming_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
    base = ["clusters", "add", "lab", "--host", "h", "--user", "u"]
    for extra, said in (
        (["--work-dir", "scratch"], "clusters add lab --work-dir: Value error, 'scratch' is not an "
         "absolute path on the cluster"),
        (["--work-dir", "/s", "--time", "4h"], "clusters add lab --time: Value error, time limit"),
        (["--work-dir", "/s", "--port", "70000"], "clusters add lab --port: Input should be"),
        (["--work-dir", "/s", "--sbatch", "mem=4G"], "clusters add lab --sbatch: Value error, "
         "extra #SBATCH line 'mem=4G' must be one option"),
    ):  # fmt: skip
        assert main([*base, *extra]) == 2
        assert capsys.readouterr().err.startswith(f"error: {said}")
    assert load_settings().slurm.clusters == {}  # nothing half-saved


def test_slurm_clusters_add_list_test_and_a_run_that_completes(
    cluster: tuple[SlurmCluster, SshServer],
    demo_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, ssh = cluster
    home, work = tmp_path / "home", tmp_path / "work"
    monkeypatch.setenv("FTDESK_HOME", str(home))
    assert main(add_args(ssh, work, "--sbatch=--comment=ftdesk-test")) == 0
    assert "cluster lab: root@127.0.0.1" in capsys.readouterr().out
    assert main(add_args(ssh, work)) == 2
    assert "a cluster named 'lab' exists; give --replace" in capsys.readouterr().err
    assert main(["clusters", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["lab"]["port"] == ssh.port and listed["lab"]["extra_sbatch"] == [
        "--comment=ftdesk-test"
    ]

    # `clusters test`: logged in, sinfo's partition, the trainer's doctor over SSH.
    assert main(["clusters", "test", "lab"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ssh", "ok"], ["partition", "ok"], ["trainer", "ok"],
    ]  # fmt: skip
    assert lines[1].split(None, 2)[2].startswith("debug (default): up, 1 ")
    assert f"{sys.executable}: python" in lines[2] and "ready to train" in lines[2]
    assert main(["clusters", "test", "lab", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [p["name"] for p in report["partitions"]] == ["debug"]
    assert report["doctor"]["ok"] and report["doctor"]["executable"] == sys.executable
    assert not (work / "ftdesk-doctor").exists()  # the doctor's upload is gone again

    # The one training of this module: `run --provider slurm --cluster lab --follow`, in its
    # own process as a person runs it, to completed (exit 0).
    config = demo_dir / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["training"]["max_steps"] = 4
    config.write_text(json.dumps(data), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTDESK_")}
    env["FTDESK_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "desktop.cli", "run", str(config), "--provider", "slurm",
         "--cluster", "lab", "--time", "9:00", "--follow", "--json"],
        env=env, capture_output=True, text=True, timeout=400, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job = json.loads(done.stdout[done.stdout.index("{") :])
    assert job["state"] == "completed" and job["provider"] == "slurm"
    job_dir = Path(job["job_dir"])
    slurm = json.loads((job_dir / "slurm.json").read_text(encoding="utf-8"))
    assert slurm["cluster"] == "lab" and slurm["slurm_job_id"].isdigit()
    script = (job_dir / "train.log").read_text(encoding="utf-8")
    assert "trainer exited with code 0" in script
    assert any(p.name.startswith("adapter_model") for p in (job_dir / "output").rglob("*"))

    assert main(["clusters", "remove", "lab"]) == 0
    assert load_settings().slurm.clusters == {}
    capsys.readouterr()


def test_slurm_clusters_test_refuses_an_unknown_host_key(
    cluster: tuple[SlurmCluster, SshServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, ssh = cluster
    monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
    empty = tmp_path / "known_hosts"
    empty.write_text("", encoding="utf-8")
    assert main(add_args(ssh, tmp_path / "work", "--known-hosts", str(empty))) == 0
    capsys.readouterr()
    assert main(["clusters", "test", "lab"]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing was run there
    assert err.startswith(f"error: the host key of [127.0.0.1]:{ssh.port} is not known")
    assert "accept it once with: ssh -p" in err and err.count("\n") == 1
    assert empty.read_text(encoding="utf-8") == ""  # never accepted


def test_slurm_a_key_with_a_passphrase_from_the_keychain(
    cluster: tuple[SlurmCluster, SshServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    import keyring
    from test_secrets import MemoryKeyring

    from desktop.core.runtime import TrainerRuntime
    from desktop.providers.base import ProviderContext
    from desktop.providers.slurm.provider import build_slurm_provider

    _, ssh = cluster
    monkeypatch.setenv("FTDESK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FTDESK_SSH_PASSPHRASE", raising=False)
    monkeypatch.setattr(keyring.core, "_keyring_backend", MemoryKeyring())
    locked = tmp_path / "id_locked"
    subprocess.run(
        # PEM: asyncssh decrypts it with `cryptography`; OpenSSH's own format needs bcrypt.
        ["ssh-keygen", "-q", "-t", "ecdsa", "-m", "PEM", "-N", "pass-phrase-SENTINEL", "-f",
         str(locked)],
        check=True, capture_output=True,
    )  # fmt: skip
    authorized = ssh.root / "authorized_keys"
    authorized.write_text(authorized.read_text() + (tmp_path / "id_locked.pub").read_text())
    assert main(add_args(ssh, tmp_path / "work", "--key-file", str(locked))) == 0
    capsys.readouterr()

    # Not stored yet: the key cannot be read, and the sentence says how to store it.
    assert main(["clusters", "test", "lab"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"error: cannot read the SSH key {locked}")
    assert err.rstrip().endswith("store its passphrase with finetune-desk keys set ssh_passphrase")

    monkeypatch.setattr("sys.stdin", io.StringIO("pass-phrase-SENTINEL\n"))
    assert main(["keys", "set", "ssh_passphrase"]) == 0
    assert "ssh_passphrase: stored in" in capsys.readouterr().out
    assert main(["clusters", "test", "lab"]) == 0
    assert capsys.readouterr().out.startswith("ssh       ok    logged in to root@127.0.0.1")
    # The provider's factory reads it too (a profile with a key file), and only then.
    context = ProviderContext(load_settings(), tmp_path / "home", TrainerRuntime())
    assert build_slurm_provider(context)._passphrase == "pass-phrase-SENTINEL"
    no_key = context.settings.slurm.clusters["lab"].model_copy(update={"key_file": None})
    bare = context.settings.model_copy(update={"slurm": SlurmOptions(clusters={"lab": no_key})})
    assert (
        build_slurm_provider(ProviderContext(bare, tmp_path, TrainerRuntime()))._passphrase is None
    )
    # Never written to a file of the app's.
    for path in (tmp_path / "home").rglob("*"):
        assert not path.is_file() or b"pass-phrase-SENTINEL" not in path.read_bytes()
