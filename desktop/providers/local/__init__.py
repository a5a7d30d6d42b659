"""The local provider: runs the trainer on this machine, detached, through a queue of slots.

`build_local_provider` (a `ProviderContext` in, a `LocalProvider` out) is registered as
"local". See `provider.py` for the behaviour, `observe.py` for what a poll of a started trainer
sees, `queue.py` for the files that keep the queue across app restarts, `scheduler.py` for the
detached process that moves it while the app is closed, `process.py` for process identity and
signals and `logs.py` for reading `train.log`.
"""

from desktop.providers.base import register_provider
from desktop.providers.local.provider import (
    EXITED_WITHOUT_STATUS,
    LocalProvider,
    SlotConfig,
    build_local_provider,
    clear_runtime_cache,
)
from desktop.providers.offline import OFFLINE_ENV

__all__ = [
    "EXITED_WITHOUT_STATUS",
    "OFFLINE_ENV",
    "LocalProvider",
    "SlotConfig",
    "build_local_provider",
    "clear_runtime_cache",
]

register_provider("local", build_local_provider)
