"""What a RunPod job is launched with: GPU types and count, cloud, budget, maximum runtime.

Held in `Settings.runpod` (the defaults a person sets once; the CLI's `--gpu`, `--gpu-count`,
`--cloud`, `--budget` and `--max-runtime` replace them for one run) and copied into the job's
folder at launch (`pod.json`), so a job keeps the limits it started with.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_IMAGE", "RunpodOptions"]

DEFAULT_IMAGE = "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404"


class RunpodOptions(BaseModel):
    """The options of a RunPod launch (frozen; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_ids: tuple[str, ...] = Field(
        default=(),
        title="GPU types",
        description="RunPod GPU type ids, tried in this order (e.g. 'NVIDIA GeForce RTX 4090').",
    )
    gpu_count: int = Field(
        default=1,
        title="GPUs per pod",
        description="GPUs in the job's pod; more than one trains with one process per GPU "
        "(the trainer's multi-process launcher), billed per GPU.",
        ge=1,
        le=8,
    )
    cloud: Literal["secure", "community"] = Field(default="secure", title="Cloud")
    budget_usd: Decimal = Field(
        default=Decimal("10"),
        title="Budget ($)",
        description="The pod is deleted once it has cost this much.",
        gt=0,
        le=100000,
    )
    max_runtime_s: int = Field(
        default=4 * 3600,
        title="Maximum runtime (s)",
        description="The pod is deleted this long after it was created, whatever happens.",
        ge=60,
        le=30 * 24 * 3600,
    )
    monthly_cap_usd: Decimal | None = Field(
        default=None,
        title="Monthly spend cap ($)",
        description="A launch whose budget would take this month's spend on all pods past "
        "this is refused before any pod is created; empty: no cap.",
        gt=0,
        le=1000000,
    )
    image: str = Field(default=DEFAULT_IMAGE, title="Image", min_length=1)
    disk_gb: int = Field(default=40, title="Container disk (GB)", ge=1, le=4000)
    volume_gb: int = Field(default=40, title="Pod volume (GB)", ge=10, le=4000)
    provisioning_limit_s: float = Field(
        default=20 * 60,
        title="Provisioning limit (s)",
        description="A pod not running (agent answering) this long after creation is deleted.",
        gt=0,
    )
    api_url: str | None = Field(
        default=None, title="API URL", description="Empty: $FTDESK_RUNPOD_API_URL or RunPod's."
    )
    proxy_url: str | None = Field(
        default=None,
        title="Pod proxy URL",
        description="Template with {pod_id} and {port}; empty: $FTDESK_RUNPOD_PROXY_URL or "
        "https://{pod_id}-{port}.proxy.runpod.net.",
    )
