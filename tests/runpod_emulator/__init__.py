"""A loopback emulator of RunPod's REST v2 API for the tests.

`runpod_server` holds its state and fault knobs, `runpod_http` serves it, `runpod_openapi`
checks every request against RunPod's official OpenAPI file.
"""

from runpod_emulator.runpod_http import serve_emulator
from runpod_emulator.runpod_openapi import OPENAPI_FILE, OPENAPI_SHA256, OpenApiContract
from runpod_emulator.runpod_server import (
    HTML_502,
    NO_CAPACITY_DETAIL,
    EmulatedPod,
    Fault,
    PodRunner,
    RecordedRequest,
    RunpodEmulator,
    VirtualClock,
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
    "RecordedRequest",
    "RunpodEmulator",
    "VirtualClock",
    "serve_emulator",
]
