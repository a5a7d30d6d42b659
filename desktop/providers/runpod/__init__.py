"""RunPod: pods on RunPod's cloud, through our own async client over its REST v2 API.

`api.RunpodApi` is the client (create, get, list, act on and delete pods, their log stream, the
GPU catalog) and `models` holds what it sends and receives. The provider that runs jobs on pods
(registered in `desktop.providers.base` like `local`) comes next and builds on these; nothing is
registered yet.
"""
