"""Which secrets a job's trainer gets: read from the secret store at launch, as environment
variables, and never written to a file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from desktop.core.checks import is_local
from desktop.core.errors import FtdeskError
from desktop.models import Job

if TYPE_CHECKING:
    from desktop.core.secrets import SecretStore

__all__ = ["secrets_for_job"]

log = logging.getLogger(__name__)


def secrets_for_job(job: Job, secret_store: Callable[[], SecretStore]) -> dict[str, str]:
    """The secrets a job's trainer gets, as environment variables (`{"HF_TOKEN": ...}`).

    Blocking (the keychain): providers call it in a worker thread at launch. A secret the job
    needs (a Hub model or dataset, a push, W&B) that cannot be read is logged as a warning;
    the Hugging Face token is passed to every other job too when it is at hand (gated
    tokenizers, templates), quietly otherwise. A keychain that fails never stops a job: the
    trainer then reports what it lacked.

    Args:
        job: the job about to start.
        secret_store: returns the secret store (created on first use by the caller).
    """
    from desktop.core.secrets import SecretName

    cfg = job.config
    uses_hub = (
        not is_local(cfg.model.name_or_path)
        or not is_local(cfg.dataset.path)
        or cfg.output.push_to_hub
    )
    needed = ["hf_token"] if uses_hub else []
    if cfg.training.report_to == "wandb":
        needed.append("wandb_api_key")
    env: dict[str, str] = {}
    try:
        store = secret_store()
        if needed:
            env.update(store.trainer_env(needed))
        if not uses_hub:
            token = store.get(SecretName.HF_TOKEN)
            if token is not None:
                env[SecretName.HF_TOKEN.trainer_env_var] = token.get_secret_value()
    except FtdeskError as exc:
        log.debug("job %s starts without optional secrets: %s", job.id, exc)
    return env
