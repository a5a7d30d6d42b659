"""The window's Slurm target against a real single-node Slurm cluster over a real sshd
(`tests/slurm_cluster.py`): the panel lists the cluster's partitions from `sinfo` (off the GUI
thread) and turns its choices into the next launch's Slurm options; a Slurm job's details show
its Slurm job id, state, queue reason, nodes and restarts from the provider's own handle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from app_helpers import run, until
from slurm_cluster import SlurmCluster, SshServer

from desktop.models import ClusterProfile, Job, JobState, Settings, SlurmOptions
from desktop.providers.slurm.provider import SlurmProvider
from desktop.providers.slurm.records import SlurmRecord
from desktop.views.operations import MessageBus, Operations
from desktop.views.slurm_panel import SlurmJobDetails, SlurmPanel
from desktop.views.state import AppState
from trainer.config import load_config

pytest_plugins = ["app_fixtures", "slurm_cluster"]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def lab(ssh: SshServer, work: Path) -> ClusterProfile:
    return ClusterProfile(
        host="127.0.0.1",
        user="root",
        port=ssh.port,
        work_dir=str(work),
        python=sys.executable,
        key_file=str(ssh.client_key),
        known_hosts=str(ssh.known_hosts),
    )


def test_slurm_panel_lists_the_clusters_partitions_and_gives_the_launch_options(
    cluster: tuple[SlurmCluster, SshServer], qtbot: Any, qloop: Any, tmp_path: Path
) -> None:
    from desktop.views.config_editor import ConfigEditor

    _, ssh = cluster
    settings = Settings(slurm=SlurmOptions(clusters={"lab": lab(ssh, tmp_path / "work")}))
    editor = ConfigEditor()
    qtbot.addWidget(editor)
    panel = SlurmPanel(settings, Operations(MessageBus()), editor)
    panel.install(editor)
    emitted: list[SlurmOptions] = []
    panel.options_changed.connect(emitted.append)
    assert panel.isHidden() and editor.target_combo.findData("slurm") >= 0
    assert panel.cluster_combo.currentText() == "lab (root@127.0.0.1)"

    async def body() -> None:
        editor.set_launch_target("slurm")  # shown, and it asks the cluster (sinfo over SSH)
        assert not panel.isHidden()
        await until(lambda: panel.partition_combo.count() > 0, 60)
        assert panel.partition_combo.currentData() == "debug"
        assert panel.partition_combo.currentText().startswith("debug (default): up, 1 ")
        assert panel.status_label.text() == "1 partition(s) on lab"
        assert emitted and emitted[-1].partition == "debug" and emitted[-1].cluster == "lab"

    run(qloop, body())
    panel.tasks_spin.setValue(2)
    panel.gpus_spin.setValue(1)
    panel.time_edit.setText("30:00")
    panel.time_edit.editingFinished.emit()
    chosen = emitted[-1]
    assert (chosen.nodes, chosen.tasks_per_node, chosen.gpus_per_node) == (1, 2, 1)
    assert chosen.time_limit == "30:00" and chosen.clusters == settings.slurm.clusters
    count = len(emitted)
    panel.time_edit.setText("4h")
    panel.time_edit.editingFinished.emit()
    assert len(emitted) == count  # a bad time limit is never a launch option
    assert "time limit '4h' is not a Slurm time: use MM, HH:MM:SS" in panel.status_label.text()


def test_slurm_panel_says_why_a_cluster_cannot_be_asked(
    cluster: tuple[SlurmCluster, SshServer], qtbot: Any, qloop: Any, tmp_path: Path
) -> None:
    _, ssh = cluster
    empty = tmp_path / "known_hosts"
    empty.write_text("", encoding="utf-8")
    profile = lab(ssh, tmp_path / "work").model_copy(update={"known_hosts": str(empty)})
    panel = SlurmPanel(
        Settings(slurm=SlurmOptions(clusters={"lab": profile})), Operations(MessageBus())
    )
    qtbot.addWidget(panel)

    async def body() -> None:
        panel.refresh_partitions()
        await until(lambda: "cannot list" in panel.status_label.text(), 60)

    run(qloop, body())
    assert panel.partition_combo.count() == 0
    assert f"the host key of [127.0.0.1]:{ssh.port} is not known" in panel.status_label.text()


def test_slurm_job_details_show_the_slurm_job_id_and_queue_reason(
    qtbot: Any, demo_dir: Path, tmp_path: Path
) -> None:
    record = SlurmRecord(
        cluster="lab",
        profile=ClusterProfile(host="login", user="me", work_dir="/scratch"),
        remote_dir="/scratch/ftdesk-x",
        slurm_job_id="4242",
        slurm_state="PENDING",
        queue_reason="Priority",
        restarts=1,
    )
    handle = SlurmProvider._handle(record)  # the handle the provider gives the job
    config = load_config(demo_dir / "config.json")
    slurm_job = Job(id="s1", name="on slurm", provider="slurm", config=config, job_dir=demo_dir,
                    state=JobState.QUEUED, handle=handle)  # fmt: skip
    local_job = Job(id="l1", name="here", config=config, job_dir=tmp_path)
    state = AppState()
    details = SlurmJobDetails(state)
    qtbot.addWidget(details)
    state.job_added(slurm_job)
    state.job_added(local_job)
    assert details.isHidden()  # nothing selected
    state.set_selected_job_ids(["s1"])
    assert not details.isHidden()
    shown = {label: widget.text() for label, widget in details.labels.items()}
    assert shown == {
        "Slurm job": "4242 on lab",
        "Slurm state": "PENDING",
        "Queue reason": "Priority",
        "Nodes": "-",
        "Restarts": "1",
    }
    # The provider's next poll: running on a node, the reason gone.
    running = record.model_copy(
        update={"slurm_state": "RUNNING", "queue_reason": "", "nodes": "n1"}
    )
    state.job_changed(slurm_job.model_copy(update={"handle": SlurmProvider._handle(running)}))
    assert details.labels["Queue reason"].text() == "-"
    assert (
        details.labels["Nodes"].text() == "n1" and details.labels["Slurm state"].text() == "RUNNING"
    )
    state.set_selected_job_ids(["l1"])
    assert details.isHidden()  # a local job has no Slurm details


def test_slurm_window_target_reaches_the_next_launchs_settings(
    cluster: tuple[SlurmCluster, SshServer], qtbot: Any, qloop: Any, home: Path, tmp_path: Path
) -> None:
    from desktop.models import load_settings
    from desktop.views.app import build_window

    _, ssh = cluster
    settings = Settings(slurm=SlurmOptions(clusters={"lab": lab(ssh, tmp_path / "work")}))
    window = build_window(settings=settings, check_runtime=False)
    qtbot.addWidget(window)

    async def body() -> None:
        window.show()
        await window.start()
        combo = window.target_combo  # the toolbar's, a copy of the editor's targets
        assert combo.findData("slurm") >= 0
        combo.setCurrentIndex(combo.findData("slurm"))
        assert window.editor.launch_target() == "slurm" and window.slurm_panel.isVisible()
        await until(lambda: window.slurm_panel.partition_combo.count() > 0, 60)
        window.slurm_panel.nodes_spin.setValue(2)
        await until(lambda: load_settings().slurm.nodes == 2, 30)  # saved off the GUI thread
        window.close()
        await window.ops.close()
        await window.service.close()

    run(qloop, body())
    chosen = window.service.settings.slurm  # what the next launch is submitted with
    assert (chosen.cluster, chosen.partition, chosen.nodes) == ("lab", "debug", 2)
    assert window.settings.slurm == chosen
