"""A real Secret Service keychain for tests: gnome-keyring on a private D-Bus session bus.

Use the ``real_keychain`` fixture (add ``pytest_plugins = ["tests.keychain"]`` to
tests/conftest.py, or ``from tests.keychain import real_keychain`` in a test module). For the
test's duration it:

* starts a private ``dbus-daemon --session`` listening on a socket in a fresh temp folder;
* starts ``gnome-keyring-daemon --foreground --unlock --components=secrets`` on that bus, fed the
  password "pw" on stdin, with a fresh HOME / XDG_DATA_HOME / XDG_CONFIG_HOME / XDG_RUNTIME_DIR,
  so its login keyring is new, unlocked and the default collection;
* sets those variables plus ``DBUS_SESSION_BUS_ADDRESS`` and
  ``PYTHON_KEYRING_BACKEND=keyring.backends.SecretService.Keyring`` in ``os.environ`` (child
  processes such as the CLI inherit them) and selects keyring's SecretService backend in this
  process with ``keyring.set_keyring``;
* afterwards kills both daemons, restores keyring's previous backend and the environment.

Where ``dbus-daemon`` or ``gnome-keyring-daemon`` is missing, or the Secret Service does not come
up, the test is skipped with the reason (``.ci/run`` installs gnome-keyring, dbus, dbus-x11 and
libsecret-tools).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = ["RealKeychain", "real_keychain", "start_real_keychain"]

KEYCHAIN_PASSWORD = "pw"
_STARTUP_TIMEOUT_S = 10.0


@dataclass
class RealKeychain:
    """A running private Secret Service.

    Attributes:
        root: temp folder holding the fake HOME, XDG folders and the bus socket.
        bus_address: the ``DBUS_SESSION_BUS_ADDRESS`` of the private bus.
        env: the variables set in ``os.environ`` while the fixture is active; pass
            ``{**os.environ}`` (or these on top of another env) to child processes.
        backend: keyring's SecretService backend bound to this keychain.
    """

    root: Path
    bus_address: str
    env: dict[str, str]
    backend: Any
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def lookup(self, service: str, username: str) -> str | None:
        """What an independent client (libsecret's ``secret-tool``) finds for ``service`` and
        ``username``, or None. Requires libsecret-tools."""
        tool = shutil.which("secret-tool")
        if tool is None:
            pytest.skip("secret-tool (libsecret-tools) is not installed")
        proc = subprocess.run(
            [tool, "lookup", "service", service, "username", username],
            env={**os.environ, **self.env},
            capture_output=True,
            timeout=10,
            check=False,
        )
        return proc.stdout.decode() if proc.returncode == 0 and proc.stdout else None


def _skip(reason: str) -> NoReturn:
    # CI installs gnome-keyring and dbus (.ci/run sets FTDESK_REQUIRE_KEYCHAIN=1): there a
    # keychain that does not come up is a failure, not a skip.
    if os.environ.get("FTDESK_REQUIRE_KEYCHAIN") == "1":
        pytest.fail(f"real_keychain: required but unavailable: {reason}")
    print(f"\nreal_keychain: skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)


def _wait_for_secret_service(
    env: dict[str, str], procs: list[subprocess.Popen[bytes]], logs: Path
) -> None:
    """Poll the private bus until org.freedesktop.secrets has an owner."""
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    last_error = "not started"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                tail = "".join(
                    p.read_text(errors="replace")[-500:] for p in sorted(logs.glob("*.log"))
                )
                name = Path(str(proc.args[0])).name  # type: ignore[index]
                raise RuntimeError(f"{name} exited with {proc.returncode}: {tail.strip()}")
        try:
            with open_dbus_connection(bus=env["DBUS_SESSION_BUS_ADDRESS"]) as conn:
                reply = conn.send_and_get_reply(
                    message_bus.NameHasOwner("org.freedesktop.secrets"), timeout=2
                )
                if reply.body[0]:
                    return
                last_error = "org.freedesktop.secrets has no owner yet"
        except Exception as exc:  # the socket may not exist yet
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise RuntimeError(
        f"the Secret Service did not come up in {_STARTUP_TIMEOUT_S:g} s: {last_error}"
    )


@contextlib.contextmanager
def start_real_keychain() -> Iterator[RealKeychain]:
    """Start a private D-Bus + gnome-keyring Secret Service; see the module docstring.

    Skips the current test when the programs are missing or the service does not start.
    """
    dbus_daemon = shutil.which("dbus-daemon")
    gnome_keyring = shutil.which("gnome-keyring-daemon")
    if dbus_daemon is None or gnome_keyring is None:
        missing = [n for n, p in (("dbus", dbus_daemon), ("gnome-keyring", gnome_keyring)) if not p]
        _skip(
            f"no real keychain: {' and '.join(missing)} not installed "
            "(apt-get install gnome-keyring dbus dbus-x11 libsecret-tools)"
        )
    try:
        import keyring
        import keyring.core
        from keyring.backends import SecretService
    except ImportError as exc:  # pragma: no cover - keyring is a dependency
        _skip(f"keyring's SecretService backend cannot be imported: {exc}")

    # Short, private paths: unix socket paths are limited to ~108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ftdk-keychain-"))
    dirs = {name: root / name for name in ("home", "data", "config", "cache", "run")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
    bus_address = f"unix:path={root / 'bus'}"
    env = {
        "HOME": str(dirs["home"]),
        "XDG_DATA_HOME": str(dirs["data"]),
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_CACHE_HOME": str(dirs["cache"]),
        "XDG_RUNTIME_DIR": str(dirs["run"]),
        "DBUS_SESSION_BUS_ADDRESS": bus_address,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring",
    }
    child_env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    child_env.update(env)

    procs: list[subprocess.Popen[bytes]] = []
    saved_env = {k: os.environ.get(k) for k in env}
    saved_backend = keyring.core._keyring_backend
    try:
        with (root / "dbus.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [dbus_daemon, "--session", "--nofork", f"--address={bus_address}"],
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                )
            )
        with (root / "keyring.log").open("wb") as log:
            keyring_proc = subprocess.Popen(
                [gnome_keyring, "--foreground", "--unlock", "--components=secrets"],
                env=child_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        procs.append(keyring_proc)
        assert keyring_proc.stdin is not None
        keyring_proc.stdin.write(KEYCHAIN_PASSWORD.encode())
        keyring_proc.stdin.close()
        try:
            _wait_for_secret_service(env, procs, root)
        except RuntimeError as exc:
            _skip(f"no real keychain: {exc}")

        os.environ.update(env)
        backend = SecretService.Keyring()  # type: ignore[no-untyped-call]
        keyring.set_keyring(backend)
        yield RealKeychain(
            root=root, bus_address=bus_address, env=env, backend=backend, _processes=procs
        )
    finally:
        keyring.core._keyring_backend = saved_backend
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def real_keychain() -> Iterator[RealKeychain]:
    """A real, unlocked gnome-keyring Secret Service on a private D-Bus, selected as keyring's
    backend for this test (and, through the environment, for child processes)."""
    with start_real_keychain() as keychain:
        yield keychain
