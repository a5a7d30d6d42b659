"""`finetune-desk spend [--month YYYY-MM] [--json]`: what the month's RunPod pods cost.

Lists each pod of the month from the app's ledger (`desktop.providers.runpod.spend`), its cost
by RunPod's clock and, where the key may read `GET /v2/billing/pods`, what RunPod billed for it
(pods made elsewhere on the account included), then the month's total, what running pods may
still spend up to their budgets, and the monthly cap. Without a key, or with one that cannot
read billing, the ledger alone counts and the output says so. `--month` defaults to this month
on RunPod's clock.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from desktop.cli.output import print_json, table

if TYPE_CHECKING:
    from pydantic import SecretStr

    from desktop.cli.commands import Context
    from desktop.providers.runpod.spend import MonthSpend

__all__ = ["cmd_spend", "spend_json"]


def _key_or_none() -> SecretStr | None:
    from desktop.core.secrets import SecretStore

    value = SecretStore().get("runpod_api_key")
    return value if value is not None and value.get_secret_value().strip() else None


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def spend_json(spend: MonthSpend, cap: Decimal | None) -> dict[str, Any]:
    """The month's spend as `spend --json` prints it (money as strings, as RunPod's dollars)."""
    return {
        "month": spend.month,
        "total_usd": str(spend.total_usd),
        "committed_usd": str(spend.committed_usd),
        "cap_usd": None if cap is None else str(cap),
        "billing_read": spend.billing_read,
        "note": spend.note,
        "pods": [
            {
                "pod_id": p.pod_id, "name": p.name, "job_id": p.job_id, "gpu_id": p.gpu_id,
                "running": p.running, "cost_usd": str(p.cost_usd),
                "billed_usd": None if p.billed_usd is None else str(p.billed_usd),
                "counted_usd": str(p.counted_usd),
            }
            for p in spend.pods
        ],
    }  # fmt: skip


def cmd_spend(ctx: Context) -> int:
    """`spend [--month YYYY-MM] [--json]`: the month's pods and their total."""
    import httpx

    from desktop.core.paths import data_home
    from desktop.providers.runpod.api import RunpodApi
    from desktop.providers.runpod.spend import Ledger, month_spend, parse_month, this_month_spend

    month = parse_month(ctx.ns.month) if ctx.ns.month is not None else None
    ledger = Ledger(data_home())
    key = None if ctx.offline else _key_or_none()
    cap = ctx.settings.runpod.monthly_cap_usd

    async def go() -> MonthSpend:
        if key is None:
            now = datetime.now(UTC)
            year, number = month or (now.year, now.month)
            spend = await month_spend(None, ledger, year, number, now)
            why = "offline" if ctx.offline else "no RunPod API key"
            return type(spend)(spend.month, spend.pods, False, f"{why}: the app's ledger alone")
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=15.0)) as http:
            api = RunpodApi(http, key, base_url=ctx.settings.runpod.api_url)
            if month is None:
                return await this_month_spend(api, ledger)
            return await month_spend(api, ledger, *month)

    spend = asyncio.run(go())
    if ctx.ns.json:
        print_json(spend_json(spend, cap))
        return 0
    rows = [
        [p.pod_id, p.job_id or p.name, p.gpu_id, "running" if p.running else "deleted",
         _money(p.cost_usd), _money(p.billed_usd), _money(p.counted_usd)]
        for p in spend.pods
    ]  # fmt: skip
    if rows:
        print(table(rows, ["POD", "JOB", "GPU", "STATE", "$ EST", "$ BILLED", "$ COUNTED"]))
    else:
        print(f"no RunPod pods in {spend.month}")
    cap_text = "no monthly cap" if cap is None else f"monthly cap ${cap:.2f}"
    running = f"; running pods may still spend ${spend.committed_usd:.2f}" if any(
        p.running for p in spend.pods
    ) else ""  # fmt: skip
    print(f"{spend.month}: ${spend.total_usd:.2f} spent on {len(rows)} pod(s){running}; {cap_text}")
    print(f"({spend.note})")
    return 0
