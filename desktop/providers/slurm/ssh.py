"""One SSH connection to a cluster's login node: commands, reads from an offset, checked uploads.

Built on `asyncssh`. Host keys are always checked against `known_hosts` (the profile's file or
`~/.ssh/known_hosts`); an unknown or changed key is `HostKeyError`, one sentence saying how to
accept it, and is never retried. `~/.ssh/config` is read (ProxyJump and the like). Keys come
from the user's ssh-agent and `~/.ssh`, or the profile's key file (its passphrase, where it has
one, from the keychain). A command that must never run twice (`sbatch`) is not retried after a
drop; a command that runs past its own time limit is `CommandTimeoutError`, never retried.

A dropped connection is re-opened with backoff (0.5 s doubling to 8 s, for about half a minute)
inside each call, so a poll that meets a restarting sshd reads on from where it stood; past
that the call raises `UnreachableError` and the job reads `unknown` until the cluster answers.
Reads are by byte offset and uploads append from the remote file's size and then compare
sha256, so neither loses nor doubles anything across a reconnect.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncssh

from desktop.core.errors import AuthError, ProviderError, UnreachableError
from desktop.models import ClusterProfile

__all__ = [
    "CHUNK",
    "CommandTimeoutError",
    "HostKeyError",
    "RemoteResult",
    "SshSession",
    "file_sha256",
]

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # upload and download piece size
T = TypeVar("T")
Conn = asyncssh.SSHClientConnection


class HostKeyError(ProviderError):
    """The cluster's host key is unknown or changed: never accepted silently."""

    exit_code = 2


class CommandTimeoutError(ProviderError):
    """A remote command ran past its time limit (not a dropped connection: never retried)."""


@dataclass(frozen=True)
class RemoteResult:
    """What a remote command did."""

    returncode: int
    stdout: str
    stderr: str


class SshSession:
    """A lazily opened, self-healing SSH connection to one cluster (see the module docstring).

    Args:
        profile: the cluster.
        passphrase: the key file's passphrase, if it has one.
        retry_s: how long one call keeps re-opening a dropped connection before it gives up.
    """

    def __init__(
        self, profile: ClusterProfile, passphrase: str | None = None, retry_s: float = 30.0
    ) -> None:
        self.profile = profile
        self._passphrase = passphrase
        self._retry_s = retry_s
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        """`user@host:port`, for messages."""
        p = self.profile
        return f"{p.user}@{p.host}:{p.port}"

    def _known_hosts(self) -> str:
        return self.profile.known_hosts or str(Path.home() / ".ssh" / "known_hosts")

    async def _open(self) -> asyncssh.SSHClientConnection:
        p = self.profile
        known = self._known_hosts()
        if not Path(known).is_file():
            raise HostKeyError(self._host_key_sentence(f"{known} does not exist"))
        try:
            return await asyncssh.connect(
                p.host,
                port=p.port,
                username=p.user,
                known_hosts=known,
                client_keys=[p.key_file] if p.key_file else (),
                passphrase=self._passphrase,
                connect_timeout=20,
                keepalive_interval=15,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(self._host_key_sentence(str(exc))) from None
        except asyncssh.PermissionDenied:
            raise AuthError(
                f"{self.where} refused the SSH login: add your key to the cluster "
                "(ssh-copy-id) or set the profile's key file"
            ) from None
        except asyncssh.KeyImportError as exc:
            raise AuthError(
                f"cannot read the SSH key {p.key_file}: {exc}; store its passphrase with "
                "finetune-desk keys set ssh_passphrase"
            ) from None
        except asyncssh.KeyEncryptionError as exc:
            # OpenSSH-format encrypted keys need bcrypt (asyncssh's optional extra); a wrong
            # passphrase also lands here.
            raise AuthError(
                f"cannot decrypt the SSH key {p.key_file} ({exc}): check the passphrase stored "
                "with finetune-desk keys set ssh_passphrase; a key in OpenSSH's format needs "
                f"the bcrypt package, or convert it with: ssh-keygen -p -m PEM -f {p.key_file}"
            ) from None

    def _host_key_sentence(self, detail: str) -> str:
        p = self.profile
        host = p.host if p.port == 22 else f"[{p.host}]:{p.port}"
        return (
            f"the host key of {host} is not known ({detail}); check its fingerprint with the "
            f"cluster's admins, then accept it once with: ssh -p {p.port} {p.user}@{p.host} "
            f"(or: ssh-keyscan -p {p.port} {p.host} >> {self._known_hosts()})"
        )

    async def _call(
        self,
        what: str,
        op: Callable[[asyncssh.SSHClientConnection], Awaitable[T]],
        *,
        retry: bool = True,
    ) -> T:
        """Run `op` on a live connection, re-opening a dropped one with backoff.

        With `retry=False` (a command that must never run twice, such as `sbatch`) a drop
        after the connection was open is not retried: the caller finds out what happened.
        """
        delay = 0.5
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_s
        while True:
            sent = False
            try:
                async with self._lock:
                    if self._conn is None:
                        self._conn = await self._open()
                    conn = self._conn
                sent = True
                return await op(conn)
            except (HostKeyError, AuthError, CommandTimeoutError):
                raise
            except (TimeoutError, asyncssh.Error, OSError) as exc:
                if isinstance(exc, asyncssh.SFTPError) and not isinstance(
                    exc, asyncssh.SFTPConnectionLost
                ):
                    raise
                await self._drop()
                if sent and not retry:
                    raise UnreachableError(
                        f"the connection to {self.where} dropped during {what}: "
                        f"{exc or type(exc).__name__}"
                    ) from None
                if loop.time() + delay > deadline:
                    raise UnreachableError(
                        f"cannot reach {self.where} ({what}): {exc or type(exc).__name__}"
                    ) from None
                log.info("SSH to %s dropped (%s); reconnecting in %.1f s", self.where, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)

    async def _drop(self) -> None:
        async with self._lock:
            conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()

    async def _sftp_client(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        async with self._lock:
            if self._sftp is None or self._conn is not conn:
                self._sftp = await conn.start_sftp_client()
            return self._sftp

    async def run(
        self, command: str, *, check: bool = True, timeout: float = 120.0, retry: bool = True
    ) -> RemoteResult:
        """Run a shell command on the login node.

        Args:
            timeout: how long the command may run (hashing a large checkpoint takes minutes);
                past it the call fails and is not retried.
            retry: False for a command that must never run twice (`sbatch`).

        Raises:
            ProviderError: a non-zero exit with `check`, naming the command and its stderr.
            CommandTimeoutError: the command did not finish within `timeout`.
        """

        async def op(conn: asyncssh.SSHClientConnection) -> RemoteResult:
            try:
                done = await asyncio.wait_for(conn.run(command, check=False), timeout)
            except TimeoutError:
                raise CommandTimeoutError(
                    f"{command.split()[0]} on {self.profile.host} did not finish within "
                    f"{timeout:g} s"
                ) from None
            return RemoteResult(
                int(done.exit_status if done.exit_status is not None else 255),
                str(done.stdout or ""),
                str(done.stderr or ""),
            )

        result = await self._call(command.split()[0], op, retry=retry)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ProviderError(
                f"{command.split()[0]} on {self.profile.host} exited {result.returncode}: "
                f"{detail[-1] if detail else 'no output'}"
            )
        return result

    async def read_from(self, path: str, offset: int, limit: int = 4 * CHUNK) -> bytes:
        """Up to `limit` bytes of a remote file from `offset` (b"" when it does not exist)."""

        async def op(conn: asyncssh.SSHClientConnection) -> bytes:
            sftp = await self._sftp_client(conn)
            try:
                async with sftp.open(path, "rb") as handle:
                    data = await handle.read(limit, offset)
            except asyncssh.SFTPNoSuchFile:
                return b""
            return data if isinstance(data, bytes) else data.encode()

        return await self._call(f"read {path}", op)

    async def size(self, path: str) -> int | None:
        """A remote file's size, None when it does not exist."""

        async def op(conn: asyncssh.SSHClientConnection) -> int | None:
            sftp = await self._sftp_client(conn)
            try:
                return int((await sftp.stat(path)).size or 0)
            except asyncssh.SFTPNoSuchFile:
                return None

        return await self._call(f"stat {path}", op)

    async def sha256(self, path: str) -> str | None:
        """The remote file's sha256 (computed there), None when it does not exist."""
        q = shlex.quote(path)
        result = await self.run(f"test -f {q} && sha256sum {q} || true", timeout=3600)
        words = result.stdout.split()
        return words[0] if words else None

    async def put(self, local: Path, remote: str) -> str:
        """Upload `local` to `remote` in chunks, appending from what is already there; returns
        the sha256, verified on the cluster. A remote file that does not match is sent again.

        Raises:
            ProviderError: the second full upload still does not match.
        """
        digest = await asyncio.to_thread(file_sha256, local)
        parent = remote.rsplit("/", 1)[0]
        await self.run(f"mkdir -p {shlex.quote(parent)}")
        for attempt in range(2):
            have = await self.size(remote) or 0
            if have > local.stat().st_size or attempt:
                have = 0
                await self.run(f"rm -f {shlex.quote(remote)}")
            await self._append_from(local, remote, have)
            if await self.sha256(remote) == digest:
                return digest
        raise ProviderError(f"uploading {local.name} to {self.profile.host}: sha256 mismatch twice")

    async def _append_from(self, local: Path, remote: str, offset: int) -> None:
        with open(local, "rb") as source:
            source.seek(offset)
            while True:
                piece = source.read(CHUNK)
                if not piece:
                    return
                at = offset

                async def op(
                    conn: asyncssh.SSHClientConnection, at: int = at, piece: bytes = piece
                ) -> None:
                    sftp = await self._sftp_client(conn)
                    async with sftp.open(remote, "r+b" if at else "wb") as handle:
                        await handle.write(piece, at)

                await self._call(f"upload {local.name}", op)
                offset += len(piece)

    async def get(self, remote: str, local: Path, sha256: str) -> None:
        """Download `remote` to `local` by offsets (resuming a partial `local.part`) and check
        its sha256 before it takes its name.

        Raises:
            ProviderError: the file does not match `sha256`.
        """
        part = local.with_name(local.name + ".part")
        local.parent.mkdir(parents=True, exist_ok=True)
        offset = part.stat().st_size if part.exists() else 0
        with open(part, "ab") as sink:
            while True:
                data = await self.read_from(remote, offset, CHUNK)
                if not data:
                    break
                sink.write(data)
                offset += len(data)
        if await asyncio.to_thread(file_sha256, part) != sha256:
            part.unlink()
            raise ProviderError(f"{remote} from {self.profile.host} does not match its sha256")
        part.replace(local)

    async def aclose(self) -> None:
        """Close the connection (jobs on the cluster keep running)."""
        await self._drop()


def file_sha256(path: Path) -> str:
    """A local file's sha256 (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
