"""API keys in the operating system's keychain, through `keyring`.

Four secrets are known (:class:`SecretName`): ``runpod_api_key``, ``hf_token``,
``wandb_api_key`` and ``ssh_passphrase`` (the Slurm provider's key file; the one never given to
a trainer process). They are stored under the service name ``finetune-desk`` with the secret's
name as the user name, so ``secret-tool lookup service finetune-desk username hf_token`` finds
one on Linux.

Every keychain call runs on its own daemon thread and is given up after a timeout (5 s by
default): a hung D-Bus, an unanswered unlock prompt or a stuck keychain daemon can never freeze
the GUI, the job service or the CLI, and never keeps the app from exiting. While one call is
still stuck, later calls fail at once with the same message instead of piling up threads.
(A ``ThreadPoolExecutor`` - and so ``asyncio.to_thread`` - is deliberately not used: its worker
threads are joined at interpreter and event-loop shutdown, so one hung keychain call would hang
the exit.)

When no keychain works, :class:`~desktop.core.errors.SecretStoreError` names the backend, the
problem and the way out: unlock or install a keychain, or set ``FTDESK_<NAME>`` (e.g.
``FTDESK_HF_TOKEN``) in the environment for this session only. :meth:`SecretStore.get` reads that
variable before the keychain; nothing ever writes it anywhere.

Values stay :class:`pydantic.SecretStr` until :meth:`SecretStore.trainer_env` turns them into
the environment of a trainer process. Every value read or written is registered with
:mod:`desktop.core.redaction`, so it is masked in every log line.

The names (`SecretName`, `SecretStatus`) live in :mod:`desktop.core.secret_names` and the
descriptions of keychain backends in :mod:`desktop.core.keychain_backends`; both are
re-exported here, the one module callers import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pydantic import SecretStr

from desktop.core.errors import FtdeskError, SecretStoreError
from desktop.core.keychain_backends import (
    describe_backend,
    problem_from_exception,
    secret_service_provider,
    unusable_reason,
    way_out,
)
from desktop.core.redaction import redact, register_secret
from desktop.core.secret_names import (
    TRAINER_SECRETS,
    InvalidSecretError,
    SecretName,
    SecretStatus,
    parse_secret_name,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SERVICE_NAME",
    "InvalidSecretError",
    "SecretName",
    "SecretStatus",
    "SecretStore",
    "parse_secret_name",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "finetune-desk"
DEFAULT_TIMEOUT_S = 5.0

T = TypeVar("T")
_DESCRIBE = "describe"


class _KeychainCall(concurrent.futures.Future[T]):
    """A future that remembers the thread running it, to tell a stuck call from a done one."""

    thread: threading.Thread | None = None


class SecretStore:
    """The app's secrets: keychain first-class, ``FTDESK_<NAME>`` as a session-only override.

    Qt-free. Sync methods (for the CLI) and ``a``-prefixed async methods (for the GUI and the
    job service) share one timeout; no method ever blocks its caller for longer.

    Args:
        backend: a keyring backend to use; None: whatever ``keyring.get_keyring()`` returns at
            call time (the user's keyring configuration, or what ``keyring.set_keyring`` set).
        timeout_s: the longest one keychain call may take before it is given up.
        environ: where ``FTDESK_<NAME>`` overrides are read; None: ``os.environ`` at call time.
        service: the keychain service name.
    """

    def __init__(
        self,
        backend: Any | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        environ: Mapping[str, str] | None = None,
        service: str = SERVICE_NAME,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._backend = backend
        self.timeout_s = timeout_s
        self._environ = environ
        self.service = service
        self._lock = threading.Lock()
        self._stuck: tuple[threading.Thread, float, str] | None = None
        self._descriptions: dict[int, str] = {}
        self._last_description: str | None = None

    # -- environment overrides -------------------------------------------------------------

    def _env_value(self, name: SecretName) -> str | None:
        env = os.environ if self._environ is None else self._environ
        value = env.get(name.override_env_var, "").strip()
        if value:
            register_secret(value)
            return value
        return None

    # -- the worker ------------------------------------------------------------------------

    def _resolve_backend(self) -> Any:
        """Runs on the worker thread: resolving the default backend may itself talk to D-Bus."""
        import keyring

        backend = self._backend if self._backend is not None else keyring.get_keyring()
        key = id(backend)
        description = self._descriptions.get(key)
        if description is None:
            description = describe_backend(backend)
            if description == "Secret Service":
                provider = secret_service_provider()
                if provider:
                    description = f"Secret Service ({provider})"
            self._descriptions[key] = description
        self._last_description = description
        return backend

    def _description(self) -> str:
        if self._last_description is not None:
            return self._last_description
        if self._backend is not None:
            return describe_backend(self._backend)
        return "the keychain"

    def _unavailable(self, problem: str, names: Iterable[SecretName]) -> SecretStoreError:
        description = self._description()
        # "no keychain (...)" already says what the problem says; don't repeat it.
        where = "" if description.startswith("no keychain") else f"{description}: "
        message = f"The keychain cannot be used: {where}{problem}. "
        return SecretStoreError(redact(message + way_out(names)))

    def _start(
        self, what: str, op: Callable[[Any], T], names: tuple[SecretName, ...]
    ) -> _KeychainCall[T]:
        """Start ``op(backend)`` on a fresh daemon thread; fail fast while a call is stuck."""
        with self._lock:
            if self._stuck is not None:
                thread, since, stuck_what = self._stuck
                if thread.is_alive():
                    waited = time.monotonic() - since
                    raise self._unavailable(
                        f"it has not answered an earlier request ({stuck_what}) for "
                        f"{waited:.0f} s (a hung D-Bus service or an unanswered unlock prompt?)",
                        names,
                    )
                self._stuck = None
        future: _KeychainCall[T] = _KeychainCall()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                backend = self._resolve_backend()
                reason = unusable_reason(backend)
                # Describing a backend that stores nothing is fine; using it is not.
                if reason is not None and what != _DESCRIBE:
                    raise self._unavailable(reason, names)
                future.set_result(op(backend))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=work, name=f"ftdesk-keychain-{what}", daemon=True)
        thread.start()
        future.thread = thread
        return future

    def _timed_out(
        self, future: _KeychainCall[Any], what: str, names: tuple[SecretName, ...]
    ) -> SecretStoreError:
        with self._lock:
            thread = future.thread
            if thread is not None and thread.is_alive():
                self._stuck = (thread, time.monotonic() - self.timeout_s, what)
        return self._unavailable(
            f"it did not answer within {self.timeout_s:g} s (a hung D-Bus service or an "
            "unanswered unlock prompt?)",
            names,
        )

    def _translate(self, exc: Exception, names: tuple[SecretName, ...]) -> FtdeskError:
        if isinstance(exc, FtdeskError):
            return exc
        return self._unavailable(problem_from_exception(exc), names)

    def _run(self, what: str, op: Callable[[Any], T], names: tuple[SecretName, ...]) -> T:
        future = self._start(what, op, names)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise self._timed_out(future, what, names) from None
        except Exception as exc:
            raise self._translate(exc, names) from exc

    async def _arun(self, what: str, op: Callable[[Any], T], names: tuple[SecretName, ...]) -> T:
        future = self._start(what, op, names)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            raise self._timed_out(future, what, names) from None
        except Exception as exc:
            raise self._translate(exc, names) from exc

    # -- operations on the backend (worker thread) -----------------------------------------

    def _op_get(self, name: SecretName) -> Callable[[Any], str | None]:
        def op(backend: Any) -> str | None:
            value = backend.get_password(self.service, name.value)
            if value:
                register_secret(value)
            return value or None

        return op

    def _op_set(self, name: SecretName, value: str) -> Callable[[Any], None]:
        def op(backend: Any) -> None:
            backend.set_password(self.service, name.value, value)

        return op

    def _op_delete(self, name: SecretName) -> Callable[[Any], bool]:
        def op(backend: Any) -> bool:
            from keyring.errors import PasswordDeleteError

            existing = backend.get_password(self.service, name.value)
            if existing is None:
                return False
            register_secret(existing)
            try:
                backend.delete_password(self.service, name.value)
            except PasswordDeleteError:
                return False
            return True

        return op

    def _op_get_many(self, names: tuple[SecretName, ...]) -> Callable[[Any], dict[str, str]]:
        def op(backend: Any) -> dict[str, str]:
            found: dict[str, str] = {}
            for name in names:
                value = self._op_get(name)(backend)
                if value:
                    found[name.value] = value
            return found

        return op

    @staticmethod
    def _clean_value(name: SecretName, value: str | SecretStr) -> str:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            raise InvalidSecretError(f"The value for {name.value} must be text.")
        # A pasted key often carries a trailing newline; no key contains leading/trailing space.
        cleaned = raw.strip()
        if not cleaned:
            raise InvalidSecretError(f"The value for {name.value} is empty; nothing was stored.")
        register_secret(cleaned)
        return cleaned

    # -- public sync API (CLI) -------------------------------------------------------------

    def get(self, name: str | SecretName) -> SecretStr | None:
        """The secret, from ``FTDESK_<NAME>`` if set, else the keychain; None when not set.

        Raises:
            InvalidSecretError: unknown name.
            SecretStoreError: the keychain cannot be used or did not answer in time.
        """
        secret = parse_secret_name(name)
        env_value = self._env_value(secret)
        if env_value is not None:
            return SecretStr(env_value)
        value = self._run(f"get {secret.value}", self._op_get(secret), (secret,))
        return SecretStr(value) if value else None

    def set(self, name: str | SecretName, value: str | SecretStr) -> None:
        """Store the secret in the keychain (surrounding whitespace removed).

        Raises:
            InvalidSecretError: unknown name or empty value.
            SecretStoreError: the keychain cannot be used or did not answer in time.
        """
        secret = parse_secret_name(name)
        cleaned = self._clean_value(secret, value)
        self._run(f"set {secret.value}", self._op_set(secret, cleaned), (secret,))

    def delete(self, name: str | SecretName) -> bool:
        """Remove the secret from the keychain; True if there was one. ``FTDESK_<NAME>`` is the
        caller's environment and is left alone.

        Raises:
            InvalidSecretError: unknown name.
            SecretStoreError: the keychain cannot be used or did not answer in time.
        """
        secret = parse_secret_name(name)
        return self._run(f"delete {secret.value}", self._op_delete(secret), (secret,))

    def status(self, name: str | SecretName) -> SecretStatus:
        """Where the secret is, or why the keychain cannot be used; never raises for a broken
        keychain (the problem is in :attr:`SecretStatus.problem`).

        Raises:
            InvalidSecretError: unknown name.
        """
        secret = parse_secret_name(name)
        try:
            value = self._run(f"status {secret.value}", self._op_get(secret), (secret,))
        except SecretStoreError as exc:
            return self._status(secret, None, str(exc))
        return self._status(secret, value is not None)

    def _status(
        self, secret: SecretName, in_keychain: bool | None, problem: str | None = None
    ) -> SecretStatus:
        """The status of `secret`, given what the keychain said (None: it could not be asked)."""
        return SecretStatus(
            name=secret,
            backend=self._description(),
            in_keychain=in_keychain,
            in_environment=self._env_value(secret) is not None,
            problem=problem,
        )

    def backend_description(self) -> str:
        """The keychain backend for people, e.g. "Secret Service (gnome-keyring)"; never raises
        (a backend that cannot be reached is described as such)."""
        try:
            return self._run(_DESCRIBE, lambda backend: self._description(), tuple(SecretName))
        except SecretStoreError:
            return f"{self._description()} (not answering)"

    def trainer_env(
        self, names: Iterable[str | SecretName] | None = None, *, strict: bool = False
    ) -> dict[str, str]:
        """The environment a trainer process gets: e.g. ``{"HF_TOKEN": "..."}``.

        The only place secrets leave :class:`~pydantic.SecretStr`; the result must go straight
        into a child process's environment. All names are read in one keychain call.

        Args:
            names: which secrets (default: every trainer secret); an unknown name, or the SSH
                passphrase (never a trainer's), raises :class:`InvalidSecretError`.
            strict: raise :class:`SecretStoreError` when the keychain cannot be used or a secret
                is not set. Otherwise secrets that are not set are left out, and a broken
                keychain is logged as a warning and only ``FTDESK_<NAME>`` values are used.
        """
        wanted, found = self._env_overrides(names)
        rest = tuple(n for n in wanted if n.value not in found)
        if rest:
            try:
                found.update(self._run("read for trainer", self._op_get_many(rest), rest))
            except SecretStoreError as exc:
                if strict:
                    raise
                log.warning("Starting the trainer without %s: %s", _names(rest), exc)
        return self._finish_trainer_env(wanted, found, strict)

    # -- public async API (GUI, job service) -----------------------------------------------

    async def aget(self, name: str | SecretName) -> SecretStr | None:
        """Async :meth:`get`: the event loop keeps running while the keychain is asked."""
        secret = parse_secret_name(name)
        env_value = self._env_value(secret)
        if env_value is not None:
            return SecretStr(env_value)
        value = await self._arun(f"get {secret.value}", self._op_get(secret), (secret,))
        return SecretStr(value) if value else None

    async def aset(self, name: str | SecretName, value: str | SecretStr) -> None:
        """Async :meth:`set`."""
        secret = parse_secret_name(name)
        cleaned = self._clean_value(secret, value)
        await self._arun(f"set {secret.value}", self._op_set(secret, cleaned), (secret,))

    async def adelete(self, name: str | SecretName) -> bool:
        """Async :meth:`delete`."""
        secret = parse_secret_name(name)
        return await self._arun(f"delete {secret.value}", self._op_delete(secret), (secret,))

    async def astatus(self, name: str | SecretName) -> SecretStatus:
        """Async :meth:`status`."""
        secret = parse_secret_name(name)
        try:
            value = await self._arun(f"status {secret.value}", self._op_get(secret), (secret,))
        except SecretStoreError as exc:
            return self._status(secret, None, str(exc))
        return self._status(secret, value is not None)

    async def abackend_description(self) -> str:
        """Async :meth:`backend_description`."""
        try:
            return await self._arun(
                _DESCRIBE, lambda backend: self._description(), tuple(SecretName)
            )
        except SecretStoreError:
            return f"{self._description()} (not answering)"

    async def atrainer_env(
        self, names: Iterable[str | SecretName] | None = None, *, strict: bool = False
    ) -> dict[str, str]:
        """Async :meth:`trainer_env`."""
        wanted, found = self._env_overrides(names)
        rest = tuple(n for n in wanted if n.value not in found)
        if rest:
            try:
                found.update(await self._arun("read for trainer", self._op_get_many(rest), rest))
            except SecretStoreError as exc:
                if strict:
                    raise
                log.warning("Starting the trainer without %s: %s", _names(rest), exc)
        return self._finish_trainer_env(wanted, found, strict)

    # -- helpers for trainer_env -----------------------------------------------------------

    def _env_overrides(
        self, names: Iterable[str | SecretName] | None
    ) -> tuple[tuple[SecretName, ...], dict[str, str]]:
        chosen: Iterable[str | SecretName] = TRAINER_SECRETS if names is None else names
        wanted = tuple(dict.fromkeys(parse_secret_name(n) for n in chosen))
        for name in wanted:
            _ = name.trainer_env_var  # the SSH passphrase is refused here, before any read
        found: dict[str, str] = {}
        for name in wanted:
            value = self._env_value(name)
            if value is not None:
                found[name.value] = value
        return wanted, found

    def _finish_trainer_env(
        self, wanted: tuple[SecretName, ...], found: dict[str, str], strict: bool
    ) -> dict[str, str]:
        missing = tuple(n for n in wanted if n.value not in found)
        if strict and missing:
            raise SecretStoreError(
                f"Not set: {_names(missing)}. Store it with `finetune-desk keys set "
                f"{missing[0].value}` or set {missing[0].override_env_var} for this session."
            )
        return {n.trainer_env_var: found[n.value] for n in wanted if n.value in found}


def _names(names: Iterable[SecretName]) -> str:
    return ", ".join(n.value for n in names)
