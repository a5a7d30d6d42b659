"""Read-only calls for choosing a GPU before a launch: the catalog, and whether the key works.

Both open their own short-lived HTTP client, so the window (on a worker) and the CLI can call
them without a provider; neither creates nor changes anything on the account.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from desktop.core.errors import AuthError, ProviderError, UnreachableError
from desktop.providers.runpod.api import RetryPolicy, RunpodApi, resolve_api_url
from desktop.providers.runpod.models import GpuType

__all__ = ["check_connection", "load_catalog"]

# A person waits on these: fail in seconds rather than retry for minutes.
_TIMEOUT = httpx.Timeout(20.0, connect=10.0)
_RETRY = RetryPolicy(attempts=2)


async def load_catalog(key: SecretStr, api_url: str | None = None) -> list[GpuType]:
    """RunPod's GPU catalog for pods: prices per cloud and availability.

    Raises:
        ProviderError: the call failed (AuthError for a refused key, UnreachableError, ...).
    """
    async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
        api = RunpodApi(http, key, base_url=api_url, retry=_RETRY)
        return await api.gpu_types()


async def check_connection(key: SecretStr, api_url: str | None = None) -> str:
    """One sentence on whether `key` reaches RunPod: works, refused (401) or unreachable.

    Lists the account's pods (read-only), the call every launch depends on. Never raises a
    ProviderError: its message becomes the sentence.
    """
    base = resolve_api_url(api_url)
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
            pods = await RunpodApi(http, key, base_url=api_url, retry=_RETRY).list_pods()
    except AuthError:
        return (
            "RunPod refused the key (401): copy a key with read and write access from "
            "runpod.io → Settings → API Keys and save it again."
        )
    except UnreachableError as exc:
        return f"RunPod could not be reached at {base}: check the network or the API URL ({exc})."
    except ProviderError as exc:
        return f"RunPod answered with an error: {exc}"
    return f"Connected to RunPod: the key works ({len(pods)} pod(s) on the account)."
