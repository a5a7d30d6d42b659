"""Values the app's layers pass around: jobs, states, metrics, settings. Qt-free, torch-free."""

from desktop.models.job import (
    ACTIVE_STATES,
    ALLOWED_TRANSITIONS,
    FINAL_STATES,
    Job,
    JobListener,
    JobState,
    JobUpdate,
    LogChunk,
    MetricPoint,
    ProviderHandle,
    SeriesColumns,
    StateTransition,
    can_transition,
    metric_columns,
)
from desktop.models.runpod_options import RunpodOptions
from desktop.models.settings import Settings, data_home, load_settings, save_settings
from desktop.models.slurm_options import ClusterProfile, SlurmOptions

__all__ = [
    "ACTIVE_STATES",
    "ALLOWED_TRANSITIONS",
    "FINAL_STATES",
    "ClusterProfile",
    "Job",
    "JobListener",
    "JobState",
    "JobUpdate",
    "LogChunk",
    "MetricPoint",
    "ProviderHandle",
    "RunpodOptions",
    "SeriesColumns",
    "Settings",
    "SlurmOptions",
    "StateTransition",
    "can_transition",
    "data_home",
    "load_settings",
    "metric_columns",
    "save_settings",
]
