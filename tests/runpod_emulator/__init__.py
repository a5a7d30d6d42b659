"""A loopback emulator of RunPod's REST v2 API for the tests (see `runpod_server`)."""

from runpod_emulator.runpod_openapi import OPENAPI_FILE, OPENAPI_SHA256, OpenApiContract
from runpod_emulator.runpod_server import (
    HTML_502,
    NO_CAPACITY_DETAIL,
    EmulatedPod,
    Fault,
    PodRunner,
    RunpodEmulator,
    VirtualClock,
    serve_emulator,
)

__all__ = [
    "HTML_502",
    "NO_CAPACITY_DETAIL",
    "OPENAPI_FILE",
    "OPENAPI_SHA256",
    "EmulatedPod",
    "Fault",
    "OpenApiContract",
    "PodRunner",
    "RunpodEmulator",
    "VirtualClock",
    "serve_emulator",
]
