"""RunPod: pods on RunPod's cloud, through our own async client over its REST v2 API.

`api.RunpodApi` is the client (create, get, list, act on and delete pods, their log stream, the
GPU catalog) and `models` holds what it sends and receives. `provider.RunpodProvider` runs a job
on a pod of its own (bootstrap, agent, budget, teardown) and is registered here as "runpod";
nothing outside this package knows its internals.
"""

from desktop.providers.base import register_provider
from desktop.providers.runpod.provider import build_runpod_provider

register_provider("runpod", build_runpod_provider)
