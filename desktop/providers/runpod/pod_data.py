"""Datasets on the web: a config's pinned dataset URL becomes a download the pod makes itself.

A dataset given as `https://host/train.jsonl#sha256=<hex>` (`trainer.config.DatasetConfig.path`)
is not uploaded: the app asks the pod's agent to fetch it (`trainer.agent_fetch`: https only,
plain http only from a loopback host, size and sha256 checked in the pod) and the pod's config
names the file it becomes, `data/<name>`. The pin lives in the config, so a run says exactly
which bytes it trained on and a changed file fails the launch before any training, with the
pod deleted. A Hub dataset id is not fetched here: the trainer loads it in the pod with the pod's
HF token (the job's `HF_TOKEN`), as it would locally.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from desktop.core.errors import ProviderError
from desktop.providers.runpod.agent_client import AgentClient
from trainer.config import TrainingConfig

__all__ = ["DatasetFetch", "dataset_fetches", "wait_fetched"]

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the agent's data/<name> rule


@dataclass(frozen=True)
class DatasetFetch:
    """A dataset the pod downloads itself: the config field, the file it becomes, the URL
    (without its pin) and the pinned sha256."""

    field: str
    name: str
    url: str
    sha256: str


def dataset_fetches(config: TrainingConfig) -> list[DatasetFetch]:
    """The dataset URLs of `config` (`path`, `eval_path`), each as the pod fetches it.

    The config already refused a URL without its `#sha256=` pin. A Hub dataset id is not here:
    the trainer loads it in the pod with the pod's HF token, as it would locally.

    Raises:
        ValueError: a URL the pod would refuse (not https; plain http only from loopback),
            one whose last path segment is no plain file name, or two URLs that would become
            the same file.
    """
    found: list[DatasetFetch] = []
    for field in ("path", "eval_path"):
        value = getattr(config.dataset, field)
        if not value or "://" not in value:
            continue
        url, _, pin = value.partition("#sha256=")
        parts = urllib.parse.urlsplit(url)
        # The pod refuses these too (`trainer.agent_fetch.url_problem`); refused here, no pod
        # is paid for to learn it.
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
            raise ValueError(
                f"dataset.{field} {url}: the pod fetches only https URLs (plain http only "
                "from this machine, a loopback host); give an https URL"
            )
        base = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        if not _FILE_NAME.fullmatch(base):
            raise ValueError(
                f"dataset.{field} {url}: the URL must end in a file name such as train.jsonl "
                "(letters, digits, '.', '_', '-'), which tells the trainer its format"
            )
        clash = next((f for f in found if f.name == f"data/{base}"), None)
        if clash is not None and clash.url != url:
            raise ValueError(
                f"dataset.{clash.field} and dataset.{field} are both named {base}; serve one "
                "under another name"
            )
        found.append(DatasetFetch(field, f"data/{base}", url, pin.lower()))
    return found


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def wait_fetched(
    job_id: str,
    agent: AgentClient,
    fetches: list[DatasetFetch],
    sleep: Callable[[float], Awaitable[None]],
    step_s: float,
    limit_s: float,
) -> None:
    """Wait until the pod committed each fetched file.

    Raises:
        ProviderError: a fetch failed (its reason: the sha256 got and pinned, an HTTP status,
            a truncated download) or ran past `limit_s`; training never started.
    """
    deadline = time.monotonic() + limit_s
    for fetch in fetches:
        while True:
            state = await agent.file_state(fetch.name)
            if state.get("committed"):
                break
            progress = state.get("fetch") or {}
            late = time.monotonic() > deadline
            if progress.get("state") != "running" or late:
                why = progress.get("error") or (
                    f"still downloading after {limit_s:.0f} s" if late else "the pod lost it"
                )
                raise ProviderError(
                    f"job {job_id}: the pod could not fetch dataset.{fetch.field}, so training "
                    f"never started: {why}"
                )
            await sleep(step_s)
