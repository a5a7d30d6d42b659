"""What a RunPod launch costs before the first training step, against a local launch.

The same job (the tiny demo model, `python -m trainer make-demo`, a few steps) is launched on
this machine by the local provider and on "a pod" of the RunPod emulator
(`tests/runpod_emulator/`), whose clock runs at real speed (`VirtualClock(speed=1)`) and whose
pods run the real startup script, agent and trainer as local processes. Both are driven as the
app drives them: the provider's `launch`, then `poll` + `ingest` every `Settings.poll_interval_s`
(the app's default), with the RunPod provider's default pause between its checks of a starting
pod. Nothing is shortened for the benchmark.

Timed, in wall seconds:

- pod: from the moment the pod is RUNNING (the emulator creates it RUNNING: provisioning is
  RunPod's business, not ours) to the moment the app has ingested the first training step;
  split into boot (RUNNING → the agent answers), upload (→ the trainer is started: bundle,
  config, data) and trainer (→ the first step ingested);
- local: from the provider's `launch` call to the moment the app has ingested the first step.

The two run interleaved (the order alternates) `--reps` times; medians are compared. The last
line reads `ratio vs local launch: X` (pod / local; target X <= 1.5).

    python bench/pod_overhead.py [--reps 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from runpod_emulator.runpod_jobs import provider_for, served_pods  # noqa: E402
from runpod_emulator.runpod_server import VirtualClock  # noqa: E402

from desktop.core.ingest import ingest  # noqa: E402
from desktop.core.runtime import TrainerRuntime  # noqa: E402
from desktop.core.store import JobStore  # noqa: E402
from desktop.models import Job, Settings  # noqa: E402
from desktop.providers.base import ProviderContext, get_provider_factory  # noqa: E402
from desktop.providers.runpod.agent_client import AgentClient  # noqa: E402
from desktop.providers.runpod.provider import RunpodProvider  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.protocol import MetricEvent  # noqa: E402

POLL_S = Settings().poll_interval_s  # the app's default poll interval
STEP_S = inspect.signature(RunpodProvider).parameters["step_s"].default  # its default pause


class Marks:
    """Wall-clock moments of one run (time.monotonic())."""

    def __init__(self) -> None:
        self.moments: dict[str, float] = {}

    def note(self, name: str) -> None:
        """Keep the first time `name` happened."""
        self.moments.setdefault(name, time.monotonic())


MARKS = Marks()


def _marking(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`method` that notes `name` when it first returns (to split the pod's time)."""

    async def marked(self: AgentClient, *args: Any, **kwargs: Any) -> Any:
        result = await method(self, *args, **kwargs)
        MARKS.note(name)
        return result

    return marked


AgentClient.health = _marking(AgentClient.health, "agent")  # type: ignore[method-assign]
AgentClient.start = _marking(AgentClient.start, "started")  # type: ignore[method-assign]


def _job(template: Path, root: Path, job_id: str, steps: int, provider: str) -> Job:
    job_dir = root / job_id
    shutil.copytree(template, job_dir)
    path = job_dir / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["training"].update(max_steps=steps, save_steps=max(steps, 1))
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return Job(id=job_id, name=job_id, provider=provider, config=load_config(path), job_dir=job_dir)


async def _run(provider: Any, store: JobStore, job: Job, start: Callable[[], float]) -> float:
    """Launch, then poll and ingest every POLL_S until final; seconds from `start()` to the
    first ingested training step."""
    store.add_job(job, "created")
    handle = await provider.launch(job)
    job = store.get_job(job.id).model_copy(update={"handle": handle})
    first: float | None = None
    deadline = time.monotonic() + 900
    while not job.is_final:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{job.id} still {job.state} after 900 s")
        update = await provider.poll(job)
        job = (await asyncio.to_thread(ingest, store, job, update)).job
        if first is None and any(isinstance(e, MetricEvent) for e in update.events):
            first = time.monotonic()
        if not job.is_final:
            await asyncio.sleep(POLL_S)
    if first is None or job.state.value != "completed":
        raise RuntimeError(f"{job.id} ended {job.state.value}: {job.state_reason}")
    return first - start()


def local_run(template: Path, root: Path, n: int, steps: int) -> float:
    """Seconds from a local launch to its first ingested step."""
    home = root / "home"
    context = ProviderContext(Settings(), home, TrainerRuntime())
    import desktop.providers.local  # noqa: F401 (registers "local", as the service does)

    provider = get_provider_factory("local")(context)
    job = _job(template, home / "jobs", f"20261202-000000-lo{n:02d}", steps, "local")
    begun = time.monotonic()
    try:
        return asyncio.run(_run(provider, JobStore(home / "ftdesk.sqlite3"), job, lambda: begun))
    finally:
        asyncio.run(provider.aclose())


def pod_run(template: Path, root: Path, n: int, steps: int) -> dict[str, float]:
    """Seconds from the pod RUNNING to the first ingested step, and its parts."""
    home = root / "home"
    MARKS.moments.clear()
    with served_pods(root / "pods", clock=VirtualClock(speed=1.0)) as (emulator, runner):
        on_create = runner.on_create

        def created(pod: Any, env: dict[str, str]) -> None:
            MARKS.note("running")  # created RUNNING (no provisioning delay)
            on_create(pod, env)

        runner.on_create = created  # type: ignore[method-assign]
        provider = provider_for(emulator, home, step_s=STEP_S)
        job = _job(template, home / "jobs", f"20261202-000000-rp{n:02d}", steps, "runpod")
        store = JobStore(home / "ftdesk.sqlite3")
        total = asyncio.run(_run(provider, store, job, lambda: MARKS.moments["running"]))
    m = MARKS.moments
    return {
        "total": total,
        "boot": m["agent"] - m["running"],
        "upload": m["started"] - m["agent"],
        "trainer": total - (m["started"] - m["running"]),
    }


def main() -> None:
    """Run the comparison and print the ratio on the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from trainer.demo import make_demo

    with tempfile.TemporaryDirectory(prefix="pod-overhead-") as tmp:
        root = Path(tmp)
        template = root / "demo"
        make_demo(template)
        local: list[float] = []
        pods: list[dict[str, float]] = []
        print(f"poll interval {POLL_S:g} s, RunPod provider's pause {STEP_S:g} s", flush=True)
        for rep in range(args.reps):
            order = ("local", "pod") if rep % 2 == 0 else ("pod", "local")
            for kind in order:
                run_root = root / f"{kind}-{rep}"
                if kind == "local":
                    local.append(local_run(template, run_root, rep, args.steps))
                    print(f"run {rep + 1} local: {local[-1]:.2f} s", flush=True)
                else:
                    pods.append(pod_run(template, run_root, rep, args.steps))
                    parts = ", ".join(f"{k} {v:.2f} s" for k, v in pods[-1].items())
                    print(f"run {rep + 1} pod:   {parts}", flush=True)
        med_local = statistics.median(local)
        med = {k: statistics.median(p[k] for p in pods) for k in pods[0]}
        print(f"median local: {med_local:.2f} s")
        print("median pod:   " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
        print(f"ratio vs local launch: {med['total'] / med_local:.2f}")


if __name__ == "__main__":
    main()
