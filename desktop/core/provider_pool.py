"""The job service's provider instances: built from the registry on first use (Qt-free).

A provider package registers its factory when it is imported (`desktop.providers.base`); the
pool imports it when a provider is first asked for, builds it from one `ProviderContext` (the
settings, the trainer runtime, the secrets a trainer gets), tells every instance built so far
when the settings change, and closes them all at the end.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from desktop.core.errors import ConfigError
from desktop.core.job_secrets import secrets_for_job
from desktop.core.runtime import TrainerRuntime
from desktop.models import Job, Settings, data_home
from desktop.providers.base import Provider, ProviderContext, get_provider_factory

if TYPE_CHECKING:
    from desktop.core.secrets import SecretStore

__all__ = ["ProviderPool", "import_provider"]

log = logging.getLogger(__name__)


class ProviderPool:
    """One instance per provider name, sharing the context of the settings in force.

    Args:
        providers: ready provider instances by name (tests, or a caller that built them).
        settings: the settings in force.
        runtime: the trainer runtime of those settings.
        secret_store: the secret store whose values reach trainers as environment variables
            (default: one is created when a trainer first needs it).
    """

    def __init__(
        self,
        providers: Mapping[str, Provider] | None,
        *,
        settings: Settings,
        runtime: TrainerRuntime,
        secret_store: SecretStore | None,
    ) -> None:
        self._providers: dict[str, Provider] = dict(providers or {})
        self._settings = settings
        self._runtime = runtime
        self._secret_store = secret_store

    def get(self, name: str) -> Provider:
        """The instance for `name`, built from the registry on first use.

        Raises:
            ConfigError: no such provider.
        """
        backend = self._providers.get(name)
        if backend is None:
            import_provider(name)
            try:
                factory = get_provider_factory(name)
            except KeyError as exc:
                raise ConfigError(f"--provider: {exc.args[0]}") from None
            backend = self._providers[name] = factory(self._context())
        return backend

    def is_built(self, name: str) -> bool:
        """Whether the instance for `name` exists already (its package is imported)."""
        return name in self._providers

    def apply(self, settings: Settings, runtime: TrainerRuntime) -> None:
        """Tell every instance built so far the context of new settings and runtime."""
        self._settings, self._runtime = settings, runtime
        context = self._context()
        for backend in self._providers.values():
            backend.apply_context(context)

    def trainer_env(self, job: Job) -> dict[str, str]:
        """The secrets a job's trainer gets, as environment variables (`{"HF_TOKEN": ...}`).

        Called by the provider in a worker thread at launch; see `job_secrets.secrets_for_job`.
        """
        return secrets_for_job(job, self._secrets)

    async def aclose(self) -> None:
        """Close every instance; one that fails to close is logged and the rest still close."""
        for name, backend in self._providers.items():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing provider %s failed", name)

    def _context(self) -> ProviderContext:
        return ProviderContext(
            settings=self._settings,
            home=data_home(),
            runtime=self._runtime,
            secrets=self.trainer_env,
        )

    def _secrets(self) -> SecretStore:
        if self._secret_store is None:
            from desktop.core.secrets import SecretStore

            self._secret_store = SecretStore()
        return self._secret_store


def import_provider(name: str) -> None:
    """Import the package of provider `name`, which registers its factory ("local" always).

    A name that is no package is left for `get_provider_factory` to refuse; a package that
    exists but lacks something it needs raises its ModuleNotFoundError.
    """
    importlib.import_module("desktop.providers.local")
    if name.isidentifier():
        try:
            importlib.import_module(f"desktop.providers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"desktop.providers.{name}":
                raise  # the provider exists but lacks something it needs
