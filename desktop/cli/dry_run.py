"""`run CONFIG --dry-run [--provider runpod --gpu ID[,ID...]] [--json]`: the estimate, no launch.

Makes every check a launch makes (the config, its files, the data through the trainer's
`check-data`, which counts the tokens when the model is a local folder), then prints the
estimate (`desktop.core.estimate`): tokens, hours, dollars and the memory fit, for each GPU
type in the order they would be tried. With `--provider runpod` it reads RunPod's GPU catalog
(read-only) for prices and memory; nothing is created, no job and no pod.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop.cli.output import print_json
from desktop.core.errors import ConfigError

if TYPE_CHECKING:
    from desktop.cli.commands import Context
    from desktop.core.estimate import RunEstimate

__all__ = ["cmd_dry_run", "run_or_dry_run"]


def run_or_dry_run(ctx: Context) -> int:
    """`run`: the estimate with `--dry-run`, else a launch (`commands.cmd_run`)."""
    from desktop.cli.commands import cmd_run

    return cmd_dry_run(ctx) if ctx.ns.dry_run else cmd_run(ctx)


def cmd_dry_run(ctx: Context) -> int:
    """Check CONFIG and print the run's estimate; create nothing.

    Raises:
        ConfigError: `--resume` with `--dry-run`, or no CONFIG; the checks' errors as `validate`.
    """
    from desktop.cli.pods import _api_key
    from desktop.cli.runpod_flags import runpod_settings
    from desktop.core.estimate import (
        GpuOffer,
        dataset_tokens,
        estimate_run,
        offers_for,
        pod_installs_bitsandbytes,
    )
    from desktop.core.memory_fit import read_model_config

    ns = ctx.ns
    if ns.resume:
        raise ConfigError("run: --dry-run estimates a new run; it does not apply to --resume")
    if not ns.config:
        raise ConfigError("run --dry-run: give a CONFIG file to estimate")
    ctx.settings = runpod_settings(ns, ctx.settings)
    options = ctx.settings.runpod

    async def validate() -> Any:
        service = ctx.service()
        try:
            return await service.validate(Path(ns.config))
        finally:
            await service.close()

    config, reports = asyncio.run(validate())
    if not reports:
        raise ConfigError(
            f"run --dry-run: dataset {config.dataset.path!r} is not a local file, so its tokens "
            "cannot be counted before launch; estimate with a local copy of the data"
        )
    tokens = dataset_tokens(config, reports[0])
    try:
        model_config: dict[str, Any] | None = read_model_config(config.model.name_or_path)
    except ConfigError:
        model_config = None
    runpod = ns.provider == "runpod"
    if runpod:
        if ctx.offline:
            raise ConfigError(
                "run --dry-run --provider runpod reads RunPod's prices: drop --offline"
            )
        from desktop.providers.runpod.catalog import load_catalog

        catalog = asyncio.run(load_catalog(_api_key(), options.api_url))
        offers = offers_for(catalog, options.gpu_ids, options.cloud)
        count = options.gpu_count  # the pod's GPUs (--gpu-count), as a launch creates it
    else:
        offers = []
        count = 1
    estimates: list[RunEstimate] = [
        estimate_run(
            config,
            tokens,
            offer,
            model_config=model_config,
            gpu_count=count,
            budget_usd=options.budget_usd,
            max_runtime_s=options.max_runtime_s,
            pod_has_bitsandbytes=pod_installs_bitsandbytes(),
        )
        for offer in offers
    ]
    if ns.json:
        print_json(
            {
                "dry_run": True,
                "tokens_per_epoch": tokens.tokens,
                "tokens_counted": tokens.counted,
                "estimates": [e.to_json() for e in estimates],
            }
        )
        return 0
    print(f"{ns.config}: valid; dry run, nothing created")
    print(f"  data: {tokens.describe()}")
    if not runpod:
        local = estimate_run(config, tokens, GpuOffer("this machine"), model_config=model_config)
        print(f"  trains on ~{local.tokens:,} tokens; {local.fit_line().lower()}")
        print("  time and cost are estimated for RunPod GPUs: add --provider runpod --gpu ID")
        return 0
    budget = Decimal(options.budget_usd)
    print(
        f"RunPod, {options.cloud} cloud, budget ${budget:,.2f}, maximum runtime "
        f"{options.max_runtime_s / 3600:g} h; GPU types in the order they are tried:"
    )
    for estimate in estimates:
        stock = estimate.offer.availability or "unknown"
        skipped = ": none available now, a launch skips it" if stock == "NONE" else ""
        print(f"- {estimate.offer.gpu_id} (availability {stock}{skipped})")
        for line in estimate.lines():
            print(f"  {line}")
    return 0
