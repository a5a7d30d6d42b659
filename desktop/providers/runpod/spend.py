"""The account-wide monthly spend cap: a ledger of the app's pods, reconciled with RunPod.

**The ledger** is `<data home>/runpod/ledger.jsonl`, one JSON line per event: a pod the app
created (`created`: id, name, job, GPU, $/h, budget, RunPod's `createdAt`) and its deletion
(`deleted`: when, on RunPod's clock). A file of its own rather than a table in the job store:
it outlives the jobs (a job removed from the store keeps its spend in the month), it belongs to
this package alone (nothing else reads it, and the store's schema does not change for it), and
appending whole lines is safe against a crash mid-write (a torn last line is skipped).

**A pod's cost** is its hourly cost times its time alive within the month, from `createdAt` to
its deletion (or to now, RunPod's clock, while it runs): the live cost's rule. Where the key may
read `GET /v2/billing/pods`, each pod's billed amount for the month is read too and the larger
figure counts (billing lags; a disk or a price change may bill more than the estimate), and
pods the ledger does not know (made elsewhere on the account) count as well: the cap is the
account's. A 401/403 there means the key cannot read billing: the ledger alone counts, and
`MonthSpend.note` says so.

**The cap** (`RunpodOptions.monthly_cap_usd`): a launch is refused before any pod is created
when this month's spend, plus what running pods may still spend up to their budgets, plus the
new budget, would pass it (`SpendCapError`, with the figures). The check and the ledger's
`created` line are taken under one file lock, so two launches cannot both slip under the cap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from desktop.core.errors import AuthError, ConfigError, ProviderError, SpendCapError
from desktop.core.file_lock import FileLock
from desktop.providers.runpod.api import RunpodApi
from desktop.providers.runpod.pod_files import PodRecord

__all__ = [
    "LEDGER_FILE",
    "Ledger",
    "MonthSpend",
    "PodSpend",
    "check_spend_cap",
    "limit_reached",
    "month_bounds",
    "month_spend",
    "note_gone",
    "parse_month",
    "this_month_spend",
]

log = logging.getLogger(__name__)

LEDGER_FILE = Path("runpod") / "ledger.jsonl"
_CENT = Decimal("0.01")


def parse_month(text: str) -> tuple[int, int]:
    """`2026-12` as (2026, 12).

    Raises:
        ConfigError: naming the value and the form wanted.
    """
    try:
        year, month = (int(part) for part in text.strip().split("-"))
        datetime(year, month, 1, tzinfo=UTC)
        if len(text.strip()) != 7:
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"--month {text!r}: give a month as YYYY-MM, e.g. 2026-12") from None
    return year, month


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """The month as a half-open UTC range [first instant, first instant of the next month)."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True)
class PodSpend:
    """One pod's spend in a month (USD); `billed_usd` is RunPod's figure when it could be read."""

    pod_id: str
    name: str
    job_id: str
    gpu_id: str
    cost_usd: Decimal
    billed_usd: Decimal | None
    running: bool
    budget_usd: Decimal | None
    created_at: datetime | None

    @property
    def counted_usd(self) -> Decimal:
        """What counts against the cap: the larger of the estimate and the bill."""
        return max(self.cost_usd, self.billed_usd or Decimal(0))


@dataclass(frozen=True)
class MonthSpend:
    """A month's spend on pods: each pod, the total, and what running pods may still spend."""

    month: str
    pods: list[PodSpend] = field(default_factory=list)
    billing_read: bool = False
    note: str = ""

    @property
    def total_usd(self) -> Decimal:
        """The month's spend so far."""
        return sum((p.counted_usd for p in self.pods), Decimal(0)).quantize(_CENT)

    @property
    def committed_usd(self) -> Decimal:
        """What the app's running pods may still spend before their budgets stop them."""
        left = (
            max(Decimal(0), p.budget_usd - p.counted_usd)
            for p in self.pods
            if p.running and p.budget_usd is not None
        )
        return sum(left, Decimal(0)).quantize(_CENT)


class Ledger:
    """The app's pods and their deletions (see the module docstring).

    Args:
        home: The app's data folder.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / LEDGER_FILE

    def _append(self, entry: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def created(
        self,
        *,
        pod_id: str,
        name: str,
        job_id: str,
        gpu_id: str,
        cost_per_hour: Decimal,
        budget_usd: Decimal,
        created_at: datetime,
    ) -> None:
        """Note a pod the app created (blocking)."""
        self._append(
            {
                "kind": "created", "pod_id": pod_id, "name": name, "job_id": job_id,
                "gpu_id": gpu_id, "cost_per_hour": str(cost_per_hour),
                "budget_usd": str(budget_usd), "created_at": created_at.isoformat(),
            }
        )  # fmt: skip

    def deleted(self, pod_id: str, deleted_at: datetime) -> None:
        """Note a pod's deletion at `deleted_at` (RunPod's clock; blocking)."""
        self._append({"kind": "deleted", "pod_id": pod_id, "deleted_at": deleted_at.isoformat()})

    def entries(self) -> dict[str, dict[str, str]]:
        """Each pod's merged entries (its `created` line with `deleted_at` once deleted)."""
        pods: dict[str, dict[str, str]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return pods
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                pod = pods.setdefault(str(entry["pod_id"]), {})
            except (ValueError, KeyError, TypeError):
                log.info("%s line %d is not a ledger entry; skipped", self.path, number)
                continue
            if entry.get("kind") == "deleted":
                pod.setdefault("deleted_at", str(entry.get("deleted_at", "")))
            else:
                pod.update({k: str(v) for k, v in entry.items() if k != "kind"})
        return pods

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Hold the ledger's lock (a cap check and the `created` line that follows it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path.with_suffix(".lock"))
        await asyncio.to_thread(lock.acquire, timeout=600)
        try:
            yield
        finally:
            lock.release()


def _overlap_hours(start: datetime, end: datetime, lo: datetime, hi: datetime) -> Decimal:
    seconds = (min(end, hi) - max(start, lo)).total_seconds()
    return Decimal(max(0.0, seconds)) / Decimal(3600)


def _ledger_spend(ledger: Ledger, lo: datetime, hi: datetime, now: datetime) -> list[PodSpend]:
    found = []
    for pod_id, entry in ledger.entries().items():
        if "created_at" not in entry:
            continue
        created = datetime.fromisoformat(entry["created_at"])
        deleted = datetime.fromisoformat(entry["deleted_at"]) if entry.get("deleted_at") else None
        end = deleted or now
        if created >= hi or end < lo:
            continue
        hourly = Decimal(entry.get("cost_per_hour", "0"))
        budget = Decimal(entry["budget_usd"]) if "budget_usd" in entry else None
        cost = hourly * _overlap_hours(created, end, lo, hi)
        if deleted is None and budget is not None:
            # Its end is unknown (deleted while the app was away): its watchdog stopped it at
            # the budget at the latest.
            cost = min(cost, budget)
        found.append(
            PodSpend(
                pod_id=pod_id, name=entry.get("name", ""), job_id=entry.get("job_id", ""),
                gpu_id=entry.get("gpu_id", ""),
                cost_usd=cost.quantize(_CENT),
                billed_usd=None, running=deleted is None,
                budget_usd=budget,
                created_at=created,
            )
        )  # fmt: skip
    return found


async def month_spend(
    api: RunpodApi | None, ledger: Ledger, year: int, month: int, now: datetime | None = None
) -> MonthSpend:
    """The month's spend: the ledger, reconciled with RunPod's pod billing when `api` may read
    it (see the module docstring). Running pods count up to `now`, else RunPod's clock as the
    billing answer showed it. Blocking reads run in a worker thread."""
    lo, hi = month_bounds(year, month)
    label = f"{year:04d}-{month:02d}"
    billed: dict[str, Decimal] | None = None
    note = "RunPod's billing was not read: the app's ledger alone counts"
    if api is not None:
        try:
            records = await api.pod_billing(lo, hi)
        except AuthError:
            note = "the API key cannot read billing (HTTP 401/403): the app's ledger alone counts"
        except ProviderError as exc:
            note = f"RunPod's billing could not be read ({exc}): the app's ledger alone counts"
        else:
            note = "reconciled with RunPod's pod billing"
            billed = {}
            for record in records:
                billed[record.pod_id] = billed.get(record.pod_id, Decimal(0)) + record.total_amount
    moment = now or (api.server_time if api is not None else None) or _utcnow()
    pods = await asyncio.to_thread(_ledger_spend, ledger, lo, hi, moment)
    if billed is None:
        return MonthSpend(label, pods, False, note)
    merged = [PodSpend(**{**p.__dict__, "billed_usd": billed.pop(p.pod_id, None)}) for p in pods]
    merged += [
        PodSpend(pod_id, "(not created by this app)", "", "", Decimal(0), amount, False, None, None)
        for pod_id, amount in sorted(billed.items())
    ]
    return MonthSpend(label, merged, True, note)


async def this_month_spend(api: RunpodApi, ledger: Ledger) -> MonthSpend:
    """This month's spend, the month read on RunPod's clock (its answer's `Date`)."""
    local = _utcnow()
    spend = await month_spend(api, ledger, local.year, local.month)
    server = api.server_time
    if server is not None and (server.year, server.month) != (local.year, local.month):
        spend = await month_spend(api, ledger, server.year, server.month)
    return spend


async def check_spend_cap(
    api: RunpodApi, ledger: Ledger, cap: Decimal | None, budget: Decimal
) -> MonthSpend | None:
    """Refuse a launch whose budget would take the month past `cap` (None: no cap, no check).

    Raises:
        SpendCapError: with the month's spend, what running pods may still spend, the budget
            and the cap; nothing has been created.
    """
    if cap is None:
        return None
    spend = await this_month_spend(api, ledger)
    total, committed = spend.total_usd, spend.committed_usd
    if total + committed + budget > cap:
        running = f" plus ${committed:.2f} that running pods may still spend" if committed else ""
        raise SpendCapError(
            f"this launch would pass the monthly RunPod spend cap: {spend.month} spend so far "
            f"${total:.2f}{running}, plus this job's budget ${budget:.2f}, is "
            f"${total + committed + budget:.2f}, over the cap of ${cap:.2f} "
            f"({spend.note}). No pod was created. Lower the budget (--budget), raise the cap in "
            "Settings, or wait for next month; `finetune-desk spend` lists the month's pods"
        )
    return spend


def limit_reached(
    record: PodRecord, cost: Decimal, created_at: datetime, now: datetime | None
) -> str | None:
    """Why a job's pod must go now (its budget or its maximum runtime, on RunPod's clock `now`),
    or None. The app checks this before it asks the pod's agent anything: a pod whose agent is
    gone still bills, and its watchdog went with the agent."""
    if cost >= record.budget_usd:
        return f"budget reached (${cost:.2f} spent of ${record.budget_usd:.2f})"
    elapsed = ((now or _utcnow()) - created_at).total_seconds()
    if elapsed >= record.max_runtime_s:
        return f"maximum runtime reached ({record.max_runtime_s} s)"
    return None


def note_gone(ledger: Ledger, record: PodRecord, now: datetime | None) -> None:
    """Note a pod that vanished while nobody watched (its watchdog deleted it): gone at its
    budget or maximum runtime if those came first, else by `now` (blocking)."""
    created = datetime.fromisoformat(record.created_at)
    seconds = float(record.max_runtime_s)
    if record.cost_per_hour > 0:
        seconds = min(seconds, float(record.budget_usd / record.cost_per_hour * 3600))
    gone = created + timedelta(seconds=seconds)
    ledger.deleted(record.pod_id, min(gone, now) if now is not None else gone)


def _utcnow() -> datetime:
    return datetime.now(UTC)
