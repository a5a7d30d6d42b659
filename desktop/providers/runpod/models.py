"""What RunPod's REST v2 sends and what we send it, as frozen pydantic models.

Remote payloads (`Pod`, `GpuType`, `LogLine`) ignore unknown keys, so a newer API does not break
an older app. The create request (`CreatePodRequest`) forbids them: it holds only fields that
RunPod's OpenAPI file (`CreatePodRequest`) knows, and RunPod answers 422 to any other. Money is
`Decimal`. Environment values are `SecretStr`: a pod's env carries tokens, and a request may be
logged or shown in a traceback.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "Availability",
    "CreatePodRequest",
    "DataCenterAvailability",
    "GpuPrice",
    "GpuRequest",
    "GpuType",
    "LogLine",
    "Mounts",
    "PersistentMount",
    "Pod",
    "PodBilling",
    "PodGpu",
    "PodRuntime",
    "PodStatus",
    "RuntimePort",
]

MAX_NAME_LENGTH = 191
MAX_ENV_VARS = 50


class _Remote(BaseModel):
    """A value RunPod sent: unknown keys ignored, frozen."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class _Request(BaseModel):
    """A value we send RunPod: unknown keys refused, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PodStatus(StrEnum):
    """A pod's lifecycle: PROVISIONING → STARTING → RUNNING, then EXITED, ERROR or TERMINATED."""

    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    ERROR = "ERROR"
    TERMINATED = "TERMINATED"


class Availability(StrEnum):
    """How much stock the catalog reports for a GPU type."""

    NONE = "NONE"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class RuntimePort(_Remote):
    """One port of a running pod, as RunPod maps it."""

    private: int
    public: int | None = None
    type: str = ""
    ip: str | None = None


class PodRuntime(_Remote):
    """What a RUNNING pod's container reports; RunPod sends null before it runs.

    `uptime` counts seconds since the container (re)started: it falling back means a restart.
    """

    uptime: int | None = None
    ports: tuple[RuntimePort, ...] = ()
    gpu_utilisation: tuple[int | None, ...] = Field(default=(), alias="gpus")

    @field_validator("gpu_utilisation", mode="before")
    @classmethod
    def _gpu_util(cls, value: Any) -> Any:
        if isinstance(value, list):
            return tuple(g.get("util") if isinstance(g, dict) else None for g in value)
        return value


class PodGpu(_Remote):
    """The GPU type and count a pod runs on."""

    id: str
    count: int = 1


class Pod(_Remote):
    """A pod as RunPod reports it (the env is left out on purpose: it holds tokens).

    `cost` is USD per hour while the pod runs and 0 otherwise; billing runs from `created_at`.
    """

    id: str
    name: str
    status: PodStatus
    image: str = ""
    actions: tuple[str, ...] = ()
    gpu: PodGpu | None = None
    cloud: str | None = None
    data_center_id: str | None = Field(default=None, alias="dataCenterId")
    cuda_version: str | None = Field(default=None, alias="cudaVersion")
    cost: Decimal = Decimal(0)
    runtime: PodRuntime | None = None
    created_at: datetime = Field(alias="createdAt")
    started_at: datetime | None = Field(default=None, alias="startedAt")


class GpuPrice(_Remote):
    """List price in USD per GPU-hour, per cloud."""

    secure: Decimal | None = None
    community: Decimal | None = None
    serverless: Decimal | None = None


class DataCenterAvailability(_Remote):
    """Stock of one GPU type in one data center."""

    id: str
    name: str = ""
    availability: Availability


class GpuType(_Remote):
    """One GPU type of the catalog, with its price and (when asked for) its availability."""

    id: str
    name: str = ""
    memory_gb: int | None = Field(default=None, alias="memory")
    secure: bool = False
    community: bool = False
    price: GpuPrice = GpuPrice()
    availability: Availability | None = None
    data_centers: tuple[DataCenterAvailability, ...] = Field(default=(), alias="dataCenters")


class LogLine(_Remote):
    """One line of a pod's log stream; `cursor` is the event id a reconnect resumes after."""

    cursor: str
    ts: datetime
    source: str
    line: str


class GpuRequest(_Request):
    """The GPU part of a create: one type (RunPod never falls back) and a count, always sent."""

    id: str = Field(min_length=1)
    count: int = Field(default=1, ge=1)
    allowed_cuda_versions: tuple[str, ...] | None = Field(default=None, alias="allowedCudaVersions")
    min_cuda_version: str | None = Field(default=None, alias="minCudaVersion")


class PersistentMount(_Request):
    """The pod's own volume (destroyed with the pod)."""

    size: int = Field(ge=10)
    path: str = "/workspace"


class Mounts(_Request):
    """The pod's volumes."""

    persistent: PersistentMount | None = None


class CreatePodRequest(_Request):
    """The body of `POST /v2/pods` (a subset of the OpenAPI `CreatePodRequest`).

    `name` must be unique per job: after a failed create the client finds the pod by it.
    """

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    image: str = Field(min_length=1)
    gpu: GpuRequest
    cloud: Literal["SECURE", "COMMUNITY"] | None = None
    disk: int | None = Field(default=None, ge=1)
    mounts: Mounts | None = None
    ports: tuple[str, ...] = ()
    env: dict[str, SecretStr] = Field(default_factory=dict)
    args: str | None = None
    data_center_ids: tuple[str, ...] | None = Field(default=None, alias="dataCenterIds")

    @field_validator("env")
    @classmethod
    def _env_limit(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if len(value) > MAX_ENV_VARS:
            raise ValueError(
                f"RunPod accepts at most {MAX_ENV_VARS} environment variables, got {len(value)}"
            )
        return value

    def to_body(self) -> dict[str, Any]:
        """The JSON body, secrets revealed: call it only to send the request."""
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"env"})
        body["gpu"]["count"] = self.gpu.count  # always sent, even when it is the default
        if self.env:
            body["env"] = {k: v.get_secret_value() for k, v in self.env.items()}
        if not self.ports:
            body.pop("ports", None)
        return body


class PodBilling(_Remote):
    """One record of `GET /v2/billing/pods`: what one pod cost in one time bucket (USD)."""

    pod_id: str = Field(alias="podId")
    start_time: datetime = Field(alias="startTime")
    end_time: datetime = Field(alias="endTime")
    total_amount: Decimal = Field(alias="totalAmount")
