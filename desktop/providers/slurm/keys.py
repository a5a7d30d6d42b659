"""The SSH key file's passphrase, read from the keychain (`finetune-desk keys set
ssh_passphrase`) only when a cluster profile names a key file; never written anywhere and never
given to a trainer process."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from desktop.core.errors import FtdeskError
from desktop.models import ClusterProfile

__all__ = ["ssh_passphrase"]

log = logging.getLogger(__name__)


def ssh_passphrase(profiles: Iterable[ClusterProfile]) -> str | None:
    """The stored SSH passphrase when one of `profiles` logs in with a key file, else None.

    Blocking (the keychain, with its own timeout). A keychain that cannot be asked is no
    error here: a key that needs the passphrase then fails to load with the sentence that
    says how to store it.
    """
    if not any(p.key_file for p in profiles):
        return None
    from desktop.core.secrets import SecretName, SecretStore

    try:
        value = SecretStore().get(SecretName.SSH_PASSPHRASE)
    except FtdeskError as exc:
        log.info("no SSH passphrase from the keychain: %s", exc)
        return None
    return None if value is None else value.get_secret_value()
