"""A real single-node Slurm cluster and an sshd on loopback, started and stopped by the tests.

What the Slurm tests run against (Debian `slurm-wlm`, `slurmdbd`, `munge`, `mariadb-server`,
`openssh-server`; as root, as CI runs):

- `munged` with a fresh key and its own socket;
- `mariadbd` on a loopback port with a throwaway data folder, for `slurmdbd`, so that `sacct`
  answers (final state, exit code, restarts) as on a real cluster;
- `slurmctld` and `slurmd` with a generated `slurm.conf` naming this host, all state and spool
  folders in a temp dir, on free ports;
- `sshd` on a free loopback port with a generated host key, a generated client key allowed for
  root, a `known_hosts` holding the host key, and `SLURM_CONF` set for every session (`SetEnv`),
  so `sbatch` over SSH reaches this cluster.

Every daemon is stopped by its pid. `why_not()` says why this machine cannot run them (the tests
skip with that reason, or fail under `FTDESK_REQUIRE_SLURM=1`, as CI sets).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["SlurmCluster", "SshServer", "cluster", "why_not"]

_DAEMONS = ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "mariadb-install-db", "sshd")


def why_not() -> str | None:
    """Why a cluster cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "the Slurm tests start slurmctld, slurmd and sshd as root; not root here"
    missing = [d for d in _DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if missing:
        return (
            f"missing {', '.join(missing)}: apt-get install slurm-wlm slurmdbd munge "
            "mariadb-server openssh-server"
        )
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, what: str, log: Path | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


def _kill_pidfile(pidfile: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@dataclass
class SlurmCluster:
    """One controller, one compute node (this host), accounting through slurmdbd."""

    root: Path
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    partition: str = "debug"
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        """The generated `slurm.conf` (set `SLURM_CONF` to it for the commands)."""
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's commands against this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one Slurm command (`sinfo`, `sacct`, ...) against this cluster."""
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def start(self) -> SlurmCluster:
        """Start munged, mariadbd, slurmdbd, slurmctld and slurmd; return when the node is idle."""
        r = self.root
        for d in ("etc", "state", "spool", "log", "munge", "db"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "etc" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = r / "munge" / "munge.socket"
        subprocess.run(
            [_exe("munged"), f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={r / 'munge' / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
             f"--seed-file={r / 'munge' / 'seed'}", "--force"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        _wait(sock.exists, "munged", r / "log" / "munged.log")

        db_port, dbd_port = _free_port(), _free_port()
        ctl_port, node_port = _free_port(), _free_port()
        data = r / "db" / "data"
        subprocess.run(
            [_exe("mariadb-install-db"), f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        db_sock = r / "db" / "sock"
        self._procs.append(
            subprocess.Popen(
                [
                    _exe("mariadbd"),
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--socket={db_sock}",
                    f"--port={db_port}",
                    "--bind-address=127.0.0.1",
                    "--user=root",
                    f"--pid-file={r / 'db' / 'pid'}",
                    f"--log-error={r / 'log' / 'mariadb.log'}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        _wait(db_sock.exists, "mariadbd", r / "log" / "mariadb.log")
        _wait(
            lambda: subprocess.run(
                ["mariadb", "--no-defaults", "-S", str(db_sock), "-u", "root", "-e",
                 "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
                 "GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';"],
                capture_output=True, timeout=30,
            ).returncode == 0,
            "mariadb user",
        )  # fmt: skip
        # cred_expire: how long a requeued job waits before it may start again (default 120 s).
        auth = f"AuthType=auth/munge\nAuthInfo=socket={sock},cred_expire=10\n"
        dbd_conf = r / "etc" / "slurmdbd.conf"
        dbd_conf.write_text(
            f"{auth}DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={dbd_port}\nSlurmUser=root\n"
            f"PidFile={r / 'slurmdbd.pid'}\nLogFile={r / 'log' / 'slurmdbd.log'}\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={db_port}\nStorageUser=slurm\nStoragePass=slurm\n"
            "StorageLoc=slurm_acct_db\n"
        )
        dbd_conf.chmod(0o600)
        cpus = os.cpu_count() or 2
        self.conf.write_text(
            f"ClusterName=ftdesk\nSlurmctldHost={self.host}\nSlurmUser=root\nSlurmdUser=root\n"
            f"{auth}CredType=cred/munge\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
            f"StateSaveLocation={r / 'state'}\nSlurmdSpoolDir={r / 'spool'}\n"
            f"SlurmctldPidFile={r / 'slurmctld.pid'}\nSlurmdPidFile={r / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}\n"
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}\n"
            f"SlurmctldPort={ctl_port}\nSlurmdPort={node_port}\n"
            "SchedulerType=sched/backfill\nSelectType=select/cons_tres\n"
            "SelectTypeParameters=CR_Core\nReturnToService=2\n"
            # Fast enough for tests: a job's end is seen within a second or two.
            "SchedulerParameters=sched_interval=1\nMessageTimeout=20\n"
            "KillWait=5\nMinJobAge=600\n"
            "JobAcctGatherType=jobacct_gather/none\n"
            "AccountingStorageType=accounting_storage/slurmdbd\n"
            f"AccountingStorageHost=localhost\nAccountingStoragePort={dbd_port}\n"
            # The accounting connection's munge socket (it does not read AuthInfo).
            f"AccountingStoragePass={sock}\n"
            "JobCompType=jobcomp/none\nMpiDefault=none\n"
            f"NodeName={self.host} CPUs={cpus} RealMemory=4000 State=UNKNOWN\n"
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE "
            "State=UP\n"
        )
        env = self.env | {"SLURM_CONF": str(self.conf)}
        subprocess.run(
            [_exe("slurmdbd")], env=env | {"SLURM_CONF": str(self.conf)}, check=True,
            capture_output=True, timeout=30,
        )  # fmt: skip
        _wait(lambda: (r / "slurmdbd.pid").exists(), "slurmdbd", r / "log" / "slurmdbd.log")
        _wait(
            lambda: (
                self.run("sacctmgr", "-i", "add", "cluster", "ftdesk", check=False).returncode == 0
                or "already exists"
                in self.run("sacctmgr", "-n", "list", "cluster", check=False).stdout
                or "ftdesk" in self.run("sacctmgr", "-n", "list", "cluster", check=False).stdout
            ),
            "slurmdbd (sacctmgr)",
            r / "log" / "slurmdbd.log",
        )
        subprocess.run([_exe("slurmctld")], env=env, check=True, capture_output=True, timeout=30)
        subprocess.run([_exe("slurmd")], env=env, check=True, capture_output=True, timeout=30)
        _wait(
            lambda: "idle" in self.run("sinfo", "-h", "-o", "%T", check=False).stdout,
            "the Slurm node",
            r / "log" / "slurmctld.log",
        )
        return self

    def stop(self) -> None:
        """Stop every daemon by its pid (slurmd first, the database last)."""
        r = self.root
        _kill_pidfile(r / "slurmd.pid")
        _kill_pidfile(r / "slurmctld.pid")
        _kill_pidfile(r / "slurmdbd.pid")
        for p in self._procs:
            with contextlib.suppress(OSError):
                p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=15)
            if p.poll() is None:
                p.kill()
                p.wait(timeout=15)
        _kill_pidfile(r / "munge" / "munged.pid")


@dataclass
class SshServer:
    """`sshd` on a free loopback port, with generated host and client keys."""

    root: Path
    slurm_conf: Path | None = None
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        """The private key (no passphrase) allowed to log in as root."""
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file holding this server's host key for `[127.0.0.1]:port`."""
        return self.root / "known_hosts"

    def start(self) -> SshServer:
        """Generate the keys and the config, start sshd, return once it accepts connections."""
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        for name in ("host_ed25519", "id_ed25519"):
            if not (r / name).exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / name)],
                    check=True, capture_output=True, timeout=30,
                )  # fmt: skip
        (r / "authorized_keys").write_text((r / "id_ed25519.pub").read_text())
        (r / "authorized_keys").chmod(0o600)
        self.port = self.port or _free_port()
        host_pub = (r / "host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        setenv = f"SetEnv SLURM_CONF={self.slurm_conf}\n" if self.slurm_conf else ""
        (r / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {r / 'host_ed25519'}\n"
            f"PidFile {r / 'sshd.pid'}\nAuthorizedKeysFile {r / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"Subsystem sftp internal-sftp\n{setenv}"
        )
        self._proc = subprocess.Popen(
            [_exe("sshd"), "-D", "-e", "-f", str(r / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=(r / "sshd.log").open("ab"),
            start_new_session=True,
        )

        def accepting() -> bool:
            with socket.socket() as s:
                s.settimeout(1)
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        _wait(accepting, "sshd", r / "sshd.log")
        return self

    def stop(self) -> None:
        """Stop sshd and every session it forked: clients see their connections drop."""
        import psutil

        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self._proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=15)
        self._proc = None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SlurmCluster, SshServer]]:
    """A running cluster and an sshd whose sessions reach it, one per test session (the Slurm
    tests share one xdist worker); stopped by pid at the end. Skips with the reason where the
    machine cannot run them, and fails instead under `FTDESK_REQUIRE_SLURM=1`."""
    reason = why_not()
    if reason is not None:
        if os.environ.get("FTDESK_REQUIRE_SLURM") == "1":
            pytest.fail(f"FTDESK_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    slurm = SlurmCluster(root / "cluster").start()
    ssh = SshServer(root / "ssh", slurm_conf=slurm.conf)
    try:
        ssh.start()
        yield slurm, ssh
    finally:
        ssh.stop()
        slurm.stop()
