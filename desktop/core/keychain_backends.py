"""Keychain backends described for people: what a `keyring` backend is called, why one can
never store anything, which program serves the Secret Service, and the way out when none
works. Used by `desktop.core.secrets`; only `secret_service_provider` does I/O (D-Bus).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from desktop.core.secret_names import SecretName

__all__ = [
    "describe_backend",
    "problem_from_exception",
    "secret_service_provider",
    "unusable_reason",
    "way_out",
]


def way_out(names: Iterable[SecretName]) -> str:
    """What to do when no keychain works: the platform's keychain fix or the session variables."""
    if sys.platform == "darwin":
        keychain = "unlock the login keychain (Keychain Access)"
    elif sys.platform == "win32":
        keychain = "check that Windows Credential Manager works for your account"
    else:
        keychain = (
            "unlock your keychain, or install one that provides the Secret Service "
            "(gnome-keyring, or KWallet with its Secret Service enabled) running in your "
            "D-Bus session"
        )
    variables = " / ".join(n.override_env_var for n in names)
    return (
        f"To fix: {keychain}; or set the environment variable {variables} for this session only "
        "(it is read from the environment and never written anywhere)."
    )


def describe_backend(backend: Any) -> str:
    """A name for people, from the backend's class alone (no I/O)."""
    module = type(backend).__module__
    if module.startswith("keyring.backends.SecretService"):
        return "Secret Service"
    if module.startswith("keyring.backends.libsecret"):
        return "Secret Service (libsecret)"
    if module.startswith("keyring.backends.kwallet"):
        return "KWallet"
    if module.startswith("keyring.backends.macOS"):
        return "macOS Keychain"
    if module.startswith("keyring.backends.Windows"):
        return "Windows Credential Locker"
    if module.startswith("keyring.backends.chainer"):
        parts = [describe_backend(b) for b in getattr(backend, "backends", [])]
        return " + ".join(parts) if parts else "no keychain (keyring found no usable backend)"
    if module.startswith("keyring.backends.fail"):
        return "no keychain (keyring found no usable backend)"
    if module.startswith("keyring.backends.null"):
        return "no keychain (keyring's null backend is configured)"
    name = getattr(type(backend), "name", None)
    return str(name) if isinstance(name, str) else f"{module}.{type(backend).__qualname__}"


def unusable_reason(backend: Any) -> str | None:
    """Why a backend can never store anything, or None when it might."""
    module = type(backend).__module__
    if module.startswith("keyring.backends.fail") or (
        module.startswith("keyring.backends.chainer") and not getattr(backend, "backends", [1])
    ):
        return (
            "keyring found no usable backend (no Secret Service on the D-Bus session bus, "
            "no KWallet, no OS keychain)"
        )
    if module.startswith("keyring.backends.null"):
        return (
            "keyring is configured to use its null backend, which stores nothing "
            "(see keyringrc.cfg or PYTHON_KEYRING_BACKEND)"
        )
    return None


_PROVIDER_NAMES = {
    "gnome-keyring-d": "gnome-keyring",
    "gnome-keyring-daemon": "gnome-keyring",
    "kwalletd5": "KWallet",
    "kwalletd6": "KWallet",
    "keepassxc": "KeePassXC",
}


def secret_service_provider() -> str | None:
    """The program that owns ``org.freedesktop.secrets`` on the session bus (best effort, Linux).

    Only ever called on a keychain worker thread: it talks to D-Bus.
    """
    try:
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        with open_dbus_connection(bus="SESSION") as conn:
            msg = message_bus.GetConnectionUnixProcessID("org.freedesktop.secrets")
            reply = conn.send_and_get_reply(msg, timeout=1.0)
        pid = int(reply.body[0])
        with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
            comm = f.read().strip()
    except Exception:
        return None
    return _PROVIDER_NAMES.get(comm, comm or None)


def problem_from_exception(exc: BaseException) -> str:
    """Turn a backend exception into the problem half of a message."""
    from keyring import errors as kerrors

    if isinstance(exc, kerrors.KeyringLocked):
        return "the keychain is locked and was not unlocked"
    if isinstance(exc, kerrors.NoKeyringError):
        return "keyring found no usable backend"
    if isinstance(exc, kerrors.InitError):
        return f"it could not be opened ({exc})"
    text = str(exc).strip()
    return f"it failed with {type(exc).__name__}" + (f": {text}" if text else "")
