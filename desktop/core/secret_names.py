"""The secrets the app knows by name, and what a person is told about one.

`SecretName` is the closed list (RunPod API key, Hugging Face token, W&B API key, SSH key
passphrase) with the environment variable each trainer secret becomes in a trainer process
(`TRAINER_SECRETS`; the SSH passphrase is the app's own, never a trainer's); `SecretStatus`
says where a value comes from without ever holding it.
"""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from desktop.core.errors import FtdeskError

__all__ = [
    "TRAINER_SECRETS",
    "InvalidSecretError",
    "SecretName",
    "SecretStatus",
    "parse_secret_name",
]

# The trainer reads these; FTDESK_<NAME> is the session-only override the app reads.
_TRAINER_ENV = {
    "runpod_api_key": "RUNPOD_API_KEY",
    "hf_token": "HF_TOKEN",
    "wandb_api_key": "WANDB_API_KEY",
}
_LABELS = {
    "runpod_api_key": "RunPod API key",
    "hf_token": "Hugging Face token",
    "wandb_api_key": "Weights & Biases API key",
    "ssh_passphrase": "SSH key passphrase",
}


class SecretName(enum.StrEnum):
    """The secrets the app keeps. The value is the name used on the command line and in the
    keychain."""

    RUNPOD_API_KEY = "runpod_api_key"
    HF_TOKEN = "hf_token"
    WANDB_API_KEY = "wandb_api_key"
    SSH_PASSPHRASE = "ssh_passphrase"  # the Slurm provider's key file; never a trainer's

    @property
    def trainer_env_var(self) -> str:
        """The environment variable a trainer process gets the value in (e.g. ``HF_TOKEN``).

        Raises:
            InvalidSecretError: the secret is the app's own (the SSH key's passphrase) and never
                reaches a trainer process.
        """
        try:
            return _TRAINER_ENV[self.value]
        except KeyError:
            raise InvalidSecretError(
                f"{self.value} is the app's own secret; it is never given to a trainer process"
            ) from None

    @property
    def override_env_var(self) -> str:
        """The session-only environment variable the app reads first (e.g. ``FTDESK_HF_TOKEN``)."""
        return f"FTDESK_{self.value.upper()}"

    @property
    def label(self) -> str:
        """A name for people (e.g. "Hugging Face token")."""
        return _LABELS[self.value]


# The secrets a trainer process may get as environment variables (the default of trainer_env).
TRAINER_SECRETS = tuple(n for n in SecretName if n.value in _TRAINER_ENV)


class InvalidSecretError(FtdeskError, ValueError):
    """An unknown secret name or an empty value; the message names it and lists what is valid."""

    exit_code = 2


def parse_secret_name(name: str | SecretName) -> SecretName:
    """Return the :class:`SecretName` for ``name``.

    Raises:
        InvalidSecretError: ``name`` is not one of the known secrets (the message lists them).
    """
    if isinstance(name, SecretName):
        return name
    try:
        return SecretName(str(name).strip().lower())
    except ValueError:
        valid = ", ".join(n.value for n in SecretName)
        raise InvalidSecretError(
            f"Unknown secret name {name!r}; valid names are: {valid}."
        ) from None


class SecretStatus(BaseModel):
    """Where one secret comes from, or why the keychain cannot be used."""

    model_config = ConfigDict(frozen=True)

    name: SecretName
    backend: str
    """The keychain backend, for people (e.g. "Secret Service (gnome-keyring)")."""
    in_keychain: bool | None
    """Whether the keychain holds a value; None when the keychain could not be asked."""
    in_environment: bool
    """Whether ``FTDESK_<NAME>`` is set (it wins over the keychain, for this session only)."""
    problem: str | None = None
    """Why the keychain cannot be used (with the way out); None when it works."""

    @property
    def source(self) -> Literal["environment", "keychain", "missing", "unavailable"]:
        """Where :meth:`SecretStore.get` takes the value from right now."""
        if self.in_environment:
            return "environment"
        if self.in_keychain:
            return "keychain"
        return "unavailable" if self.problem else "missing"

    def describe(self) -> str:
        """One line for people; never contains the value."""
        name = self.name.value
        if self.in_environment:
            where = f"{name}: set by {self.name.override_env_var} for this session (not stored)"
            if self.in_keychain:
                where += f"; a stored value in {self.backend} is shadowed"
            return where
        if self.in_keychain:
            return f"{name}: stored in {self.backend}"
        if self.problem:
            return f"{name}: unavailable - {self.problem}"
        return f"{name}: not set (keychain: {self.backend})"
