"""`finetune-desk clusters add|list|remove|test`: the Slurm clusters in the settings.

`add` validates the profile as the settings file would (a bad value names its flag) and saves
it; `test` logs in over SSH (host keys checked: an unknown one is refused with the sentence
that says how to accept it, exit 2), lists the partitions with `sinfo`, and runs
`python -m trainer doctor --json` there with the profile's Python, one line per check.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pydantic import ValidationError

from desktop.cli.output import print_json, table
from desktop.core.errors import ConfigError, ProviderError
from desktop.models import ClusterProfile, SlurmOptions, save_settings

__all__ = ["add_clusters_parser", "cmd_clusters"]

# ClusterProfile field -> its flag on `clusters add`
_FIELD_FLAGS = {
    "host": "--host",
    "user": "--user",
    "port": "--port",
    "work_dir": "--work-dir",
    "python": "--python",
    "key_file": "--key-file",
    "known_hosts": "--known-hosts",
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "time_limit": "--time",
    "gpus_per_node": "--gpus-per-node",
    "extra_sbatch": "--sbatch",
    "setup_lines": "--setup",
    "max_requeues": "--max-requeues",
}


def add_clusters_parser(p: argparse.ArgumentParser) -> None:
    """The actions of `clusters` and their flags."""
    actions = p.add_subparsers(dest="clusters_action", metavar="ACTION", required=True)
    a = actions.add_parser("add", help="save a cluster profile")
    a.add_argument("cluster", metavar="NAME")
    a.add_argument("--host", required=True, help="the login node")
    a.add_argument("--user", required=True, help="your user on the cluster")
    a.add_argument("--work-dir", required=True, help="a folder on the shared file system")
    a.add_argument("--port", help="SSH port (default 22)")
    a.add_argument("--python", help="the trainer runtime there (a venv's bin/python)")
    a.add_argument("--key-file", help="SSH key (default: ssh-agent and ~/.ssh)")
    a.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    a.add_argument("--partition", help="default partition")
    a.add_argument("--account", help="Slurm account")
    a.add_argument("--qos", help="Slurm QoS")
    a.add_argument("--time", help="default time limit (e.g. 4:00:00)")
    a.add_argument("--gpus-per-node", help="default GPUs per node")
    a.add_argument(
        "--sbatch",
        action="append",
        metavar="LINE",
        help="an extra #SBATCH option, as --sbatch=--mem=64G",
    )
    a.add_argument("--setup", action="append", metavar="LINE", help="a shell line run first")
    a.add_argument("--max-requeues", help="requeues after a time limit or preemption")
    a.add_argument("--replace", action="store_true", help="overwrite a profile of that name")
    ls = actions.add_parser("list", help="the saved clusters")
    ls.add_argument("--json", action="store_true", help="print JSON")
    rm = actions.add_parser("remove", help="forget a cluster profile")
    rm.add_argument("cluster", metavar="NAME")
    t = actions.add_parser("test", help="log in, list partitions, check the trainer runtime")
    t.add_argument("cluster", metavar="NAME")
    t.add_argument("--json", action="store_true", help="print JSON")


def cmd_clusters(ctx: Any) -> int:
    """`clusters add|list|remove|test` (see the module docstring)."""
    action = ctx.ns.clusters_action
    if action == "add":
        return _add(ctx)
    if action == "remove":
        return _remove(ctx)
    if action == "test":
        return _test(ctx)
    return _list(ctx)


def _profile_data(ns: argparse.Namespace) -> dict[str, object]:
    data: dict[str, object] = {}
    for field, flag in _FIELD_FLAGS.items():
        value = getattr(ns, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if field in ("extra_sbatch", "setup_lines"):
            data[field] = tuple(value)
        elif field in ("port", "gpus_per_node", "max_requeues"):
            if not str(value).strip().isdigit():
                raise ConfigError(f"clusters add {flag} {value!r}: give a whole number")
            data[field] = int(value)
        else:
            data[field] = value
    return data


def _add(ctx: Any) -> int:
    ns, settings = ctx.ns, ctx.settings
    name = ns.cluster
    if name in settings.slurm.clusters and not ns.replace:
        raise ConfigError(
            f"clusters add: a cluster named {name!r} exists; give --replace to overwrite it "
            f"or remove it first (finetune-desk clusters remove {name})"
        )
    try:
        profile = ClusterProfile.model_validate(_profile_data(ns))
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else "profile"
        flag = _FIELD_FLAGS.get(field, field)
        raise ConfigError(f"clusters add {name} {flag}: {problem['msg']}") from None
    try:
        options = SlurmOptions.model_validate(
            {**settings.slurm.model_dump(), "clusters": {**settings.slurm.clusters, name: profile}}
        )
    except ValidationError as exc:
        raise ConfigError(f"clusters add: {exc.errors()[0]['msg']}") from None
    path = save_settings(settings.model_copy(update={"slurm": options}))
    print(f"cluster {name}: {profile.user}@{profile.host}:{profile.port} saved in {path}")
    print(f"check it with: finetune-desk clusters test {name}")
    return 0


def _known(ctx: Any, name: str) -> ClusterProfile:
    try:
        return ctx.settings.slurm.profile(name)[1]  # type: ignore[no-any-return]
    except KeyError as exc:
        raise ConfigError(f"clusters {ctx.ns.clusters_action}: {exc.args[0]}") from None


def _remove(ctx: Any) -> int:
    name, settings = ctx.ns.cluster, ctx.settings
    _known(ctx, name)
    clusters = {k: v for k, v in settings.slurm.clusters.items() if k != name}
    chosen = None if settings.slurm.cluster == name else settings.slurm.cluster
    options = settings.slurm.model_copy(update={"clusters": clusters, "cluster": chosen})
    save_settings(settings.model_copy(update={"slurm": options}))
    print(f"cluster {name}: removed (its jobs keep the profile they started with)")
    return 0


def _list(ctx: Any) -> int:
    clusters: dict[str, ClusterProfile] = ctx.settings.slurm.clusters
    if ctx.ns.json:
        print_json({name: p.model_dump(mode="json") for name, p in clusters.items()})
        return 0
    if not clusters:
        print("no clusters yet; add one with: finetune-desk clusters add NAME --host HOST "
              "--user USER --work-dir /path")  # fmt: skip
        return 0
    rows = [
        [name, f"{p.user}@{p.host}:{p.port}", p.work_dir, p.partition or "-", p.python]
        for name, p in sorted(clusters.items())
    ]
    print(table(rows, ["NAME", "LOGIN", "WORK DIR", "PARTITION", "PYTHON"]))
    return 0


def _test(ctx: Any) -> int:
    from desktop.providers.slurm.probe import partitions, remote_doctor
    from desktop.providers.slurm.ssh import SshSession

    name = ctx.ns.cluster
    profile = _known(ctx, name)
    checks: list[dict[str, Any]] = []
    found: dict[str, Any] = {"partitions": [], "doctor": None}

    def check(what: str, ok: bool, detail: str) -> None:
        checks.append({"check": what, "ok": ok, "detail": detail})
        if not ctx.ns.json:
            print(f"{what:<9} {'ok  ' if ok else 'FAIL'}  {detail}", flush=True)

    async def go() -> None:
        session = SshSession(profile, _passphrase(profile), retry_s=10.0)
        try:
            who = await session.run("whoami")  # an unknown host key stops everything here
            check("ssh", True, f"logged in to {session.where} as {who.stdout.strip()}")
            try:
                listed = await partitions(session)
            except ProviderError as exc:
                check("slurm", False, f"sinfo: {exc}")
            else:
                found["partitions"] = [p.__dict__ for p in listed]
                if not listed:
                    check("slurm", False, "sinfo lists no partition")
                for part in listed:
                    check("partition", part.available == "up", part.describe())
                if profile.partition and profile.partition not in {p.name for p in listed}:
                    check("partition", False, f"{profile.partition} (the profile's) is not listed")
            try:
                report = await remote_doctor(session)
            except ProviderError as exc:
                check("trainer", False, str(exc))
            else:
                found["doctor"] = report.to_json_dict()
                torch = report.torch or "no torch"
                verdict = "ready to train" if report.ok else "; ".join(report.problems)
                check("trainer", report.ok, f"{report.executable}: python {report.python}, "
                      f"torch {torch}, {len(report.gpus)} GPU(s): {verdict}")  # fmt: skip
        finally:
            await session.aclose()

    asyncio.run(go())
    ok = all(c["ok"] for c in checks)
    if ctx.ns.json:
        print_json({"cluster": name, "ok": ok, "checks": checks, **found})
    return 0 if ok else 1


def _passphrase(profile: ClusterProfile) -> str | None:
    from desktop.providers.slurm.keys import ssh_passphrase

    return ssh_passphrase([profile])
