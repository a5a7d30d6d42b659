"""The dataset preflight panel: what `trainer check-data --json` found, for a person.

The panel only shows a `DataReport` (trainer/reports.py); the window runs the check in the
background (the job service's trainer runtime, in a worker thread), so a 1 GB file never blocks
the UI. It shows the detected
format and counts, the first rows normalised to chat messages, every problem with its line
(selecting one asks for that record: `record_requested(line)`), the token-length histogram
with the training max length marked and the share of records it cuts, and one example
rendered through the chat template with the tokens the loss is computed on highlighted.

`DataCheckSummary` is the quick preflight's verdict under the dataset field (run when a dataset
is chosen): counts, every listed problem with its line, and "Skip invalid records (N)".
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from trainer.reports import DataReport, RenderedExample, TokenStats

__all__ = [
    "FORMAT_LABELS",
    "DataCheckSummary",
    "PreflightDialog",
    "PreflightPanel",
    "example_columns",
]


FORMAT_LABELS: dict[str, str] = {
    "messages": "chat messages",
    "sharegpt": "ShareGPT conversations",
    "alpaca": "Alpaca (instruction / input / output)",
    "prompt_completion": "prompt / completion",
    "text": "plain text",
}
_TRAINED_STYLE = "background-color: #cdeccd; color: #14521f;"
_CONTEXT_STYLE = "color: #777777;"


def _messages_of(example: dict[str, Any]) -> list[dict[str, str]]:
    """An example as chat messages, whatever the checker normalised it to."""
    messages = example.get("messages")
    if isinstance(messages, list):
        return [m for m in messages if isinstance(m, dict)]
    if "prompt" in example or "completion" in example:
        return [
            {"role": "user", "content": str(example.get("prompt", ""))},
            {"role": "assistant", "content": str(example.get("completion", ""))},
        ]
    if "text" in example:
        return [{"role": "text", "content": str(example["text"])}]
    return [{"role": k, "content": str(v)} for k, v in example.items()]


def example_columns(example: dict[str, Any]) -> tuple[str, str, str, int]:
    """(system, first user turn, first assistant turn, number of turns) of one example."""
    messages = _messages_of(example)
    first: dict[str, str] = {}
    for message in messages:
        role = str(message.get("role", ""))
        if role == "text":
            role = "user"
        first.setdefault(role, str(message.get("content", "")))
    return (
        first.get("system", ""),
        first.get("user", ""),
        first.get("assistant", ""),
        len(messages),
    )


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ⏎ ".join(text.splitlines())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class PreflightPanel(QWidget):
    """Shows one dataset check report.

    Signals:
        record_requested(int): the person selected the problem at this line; the window reads
            that record and passes it to `show_record`.
        rerun_requested(): the person asked to check again.
    """

    record_requested = Signal(int)
    rerun_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("preflight_panel")
        self._report: DataReport | None = None

        self.summary_label = QLabel("No dataset checked yet.")
        self.summary_label.setObjectName("preflight_summary")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rerun_button = QPushButton("Check again")
        self.rerun_button.clicked.connect(self.rerun_requested)
        top = QHBoxLayout()
        top.addWidget(self.summary_label, 1)
        top.addWidget(self.rerun_button, 0, Qt.AlignmentFlag.AlignTop)

        self.examples_table = QTableWidget(0, 5)
        self.examples_table.setObjectName("preflight_examples")
        self.examples_table.setHorizontalHeaderLabels(["#", "System", "User", "Assistant", "Turns"])
        self._setup_table(self.examples_table)
        header = self.examples_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.ResizeToContents)
        header.resizeSection(1, 120)

        self.problems_table = QTableWidget(0, 2)
        self.problems_table.setObjectName("preflight_problems")
        self.problems_table.setHorizontalHeaderLabels(["Line", "Problem"])
        self._setup_table(self.problems_table)
        self.problems_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.ResizeToContents
        )
        self.problems_table.horizontalHeader().setStretchLastSection(True)
        self.problems_table.itemSelectionChanged.connect(self._on_problems_selection_changed)
        self.record_view = QPlainTextEdit()
        self.record_view.setObjectName("preflight_record")
        self.record_view.setReadOnly(True)
        self.record_view.setPlaceholderText("Select a problem to see its record.")
        problems_box = QGroupBox("Problems")
        problems_layout = QVBoxLayout(problems_box)
        problems_split = QSplitter(Qt.Orientation.Horizontal)
        problems_split.addWidget(self.problems_table)
        problems_split.addWidget(self.record_view)
        problems_split.setSizes([420, 300])
        problems_layout.addWidget(problems_split)

        self.histogram = pg.PlotWidget()
        self.histogram.setObjectName("preflight_histogram")
        self.histogram.setBackground("w")
        self.histogram.setMinimumHeight(160)
        plot = self.histogram.getPlotItem()
        plot.setLabel("bottom", "tokens per record")
        plot.setLabel("left", "records")
        plot.showGrid(x=False, y=True, alpha=0.2)
        plot.setMouseEnabled(x=False, y=False)
        self.bars: pg.BarGraphItem | None = None
        self.max_length_line: pg.InfiniteLine | None = None
        self.tokens_label = QLabel("Token lengths need the model's tokenizer.")
        self.tokens_label.setObjectName("preflight_tokens")
        self.tokens_label.setWordWrap(True)
        tokens_box = QGroupBox("Token lengths")
        tokens_layout = QVBoxLayout(tokens_box)
        tokens_layout.addWidget(self.tokens_label)
        tokens_layout.addWidget(self.histogram, 1)

        self.rendered_view = QTextEdit()
        self.rendered_view.setObjectName("preflight_rendered")
        self.rendered_view.setReadOnly(True)
        self.rendered_label = QLabel(
            "One example through the chat template; the highlighted tokens are trained on."
        )
        self.rendered_label.setWordWrap(True)
        rendered_box = QGroupBox("Rendered example")
        rendered_layout = QVBoxLayout(rendered_box)
        rendered_layout.addWidget(self.rendered_label)
        rendered_layout.addWidget(self.rendered_view, 1)

        examples_box = QGroupBox("First records, as chat messages")
        examples_layout = QVBoxLayout(examples_box)
        examples_layout.addWidget(self.examples_table)

        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(tokens_box)
        bottom.addWidget(rendered_box)
        bottom.setSizes([450, 450])
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(examples_box)
        body.addWidget(problems_box)
        body.addWidget(bottom)
        body.setSizes([220, 160, 260])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(body, 1)

    @staticmethod
    def _setup_table(table: QTableWidget) -> None:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.setWordWrap(False)
        table.setAlternatingRowColors(True)

    # -- public API -------------------------------------------------------------------------

    @property
    def report(self) -> DataReport | None:
        """The report shown (what `check-data --json` printed), or None."""
        return self._report

    def set_busy(self, path: str) -> None:
        """Say that `path` is being checked (the old report stays until the new one arrives)."""
        self.summary_label.setText(f"Checking {path} …")
        self.rerun_button.setEnabled(False)

    def show_error(self, message: str) -> None:
        """The check could not run; say why."""
        self.summary_label.setText(f"The check did not run: {message}")
        self.summary_label.setStyleSheet("color: #c9302c;")
        self.rerun_button.setEnabled(True)

    def show_report(self, report: DataReport) -> None:
        """Show a `check-data --json` report."""
        self._report = report
        self.rerun_button.setEnabled(True)
        usable = report.usable
        fmt = report.format
        fmt_text = FORMAT_LABELS.get(fmt, fmt) if fmt else "unknown"
        count = report.problem_count or len(report.problems)
        verdict = "usable" if usable else "NOT usable"
        lines = [
            f"<b>{html.escape(report.path)}</b>",
            f"Format: <b>{html.escape(fmt_text)}</b> · {report.records} records "
            f"({report.valid_records} valid) · "
            f"{count} problem{'s' if count != 1 else ''} · "
            f"<b style='color:{'#2e7d32' if usable else '#c9302c'}'>{verdict}</b>",
        ]
        for warning in report.warnings:
            lines.append(f"<span style='color:#9a6700'>⚠ {html.escape(str(warning))}</span>")
        self.summary_label.setText("<br>".join(lines))
        self.summary_label.setStyleSheet("")
        self._fill_examples(report.examples)
        self._fill_problems(report)
        self._fill_tokens(report.token_stats)
        self._fill_rendered(report.rendered_example)

    def show_record(self, line: int, text: str) -> None:
        """Show the record of a selected problem."""
        location = self._report.location if self._report is not None else "line"
        self.record_view.setPlainText(f"{location} {line}:\n{text}")

    def problem_lines(self) -> list[int | None]:
        """The line of every listed problem, in order (None: a problem of the whole file)."""
        out: list[int | None] = []
        for row in range(self.problems_table.rowCount()):
            item = self.problems_table.item(row, 0)
            value = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
            out.append(int(value) if value is not None else None)
        return out

    # -- filling ----------------------------------------------------------------------------

    def _fill_examples(self, examples: list[dict[str, Any]]) -> None:
        table = self.examples_table
        table.setRowCount(len(examples))
        for row, example in enumerate(examples):
            system, user, assistant, turns = example_columns(example)
            cells = [str(row + 1), system, user, assistant, str(turns)]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(_one_line(text))
                if column in (1, 2, 3) and text:
                    item.setToolTip(text[:2000])
                table.setItem(row, column, item)

    def _fill_problems(self, report: DataReport) -> None:
        problems = report.problems
        location = report.location
        table = self.problems_table
        table.setRowCount(len(problems))
        for row, problem in enumerate(problems):
            line, message = problem.line, problem.message
            line_item = QTableWidgetItem("—" if line is None else f"{location} {line}")
            line_item.setData(Qt.ItemDataRole.UserRole, line)
            table.setItem(row, 0, line_item)
            message_item = QTableWidgetItem(str(message))
            message_item.setToolTip(str(message))
            table.setItem(row, 1, message_item)
        hidden = report.problem_count - len(problems)
        self.record_view.setPlainText(
            f"... and {hidden} more problems not listed" if hidden > 0 else ""
        )

    def _fill_tokens(self, stats: TokenStats | None) -> None:
        plot = self.histogram.getPlotItem()
        if self.bars is not None:
            plot.removeItem(self.bars)
            self.bars = None
        if self.max_length_line is not None:
            plot.removeItem(self.max_length_line)
            self.max_length_line = None
        if not stats:
            self.tokens_label.setText(
                "No token lengths: the model's tokenizer was not available to the check."
            )
            return
        bins = stats.histogram
        if bins:
            x0 = [b.start - 0.5 for b in bins]
            widths = [float(b.end - b.start + 1) for b in bins]
            heights = [float(b.count) for b in bins]
            self.bars = pg.BarGraphItem(
                x0=x0, width=widths, height=heights, brush="#6baed6", pen="#3182bd"
            )
            plot.addItem(self.bars)
        max_length = stats.max_length
        share = stats.share_cut
        if max_length is not None:
            self.max_length_line = pg.InfiniteLine(
                pos=float(max_length),
                angle=90,
                pen=pg.mkPen("#d62728", width=2, style=Qt.PenStyle.DashLine),
                label=f"max length {max_length}",
                labelOpts={"position": 0.9, "color": "#d62728"},
            )
            plot.addItem(self.max_length_line)
        plot.autoRange()
        sampled = " (a random sample)" if stats.sampled else ""
        text = (
            f"{stats.counted} records counted{sampled}: mean {stats.mean:.0f}, "
            f"median {stats.p50}, p95 {stats.p95}, max {stats.max} tokens."
        )
        if max_length is not None and share is not None:
            colour = "#c9302c" if share > 0.05 else ("#9a6700" if share > 0 else "#2e7d32")
            text += (
                f" <b style='color:{colour}'>{share:.1%} cut at max length {max_length}</b>"
                f" ({stats.cut_count or 0} records)."
            )
        self.tokens_label.setText(text)

    def _fill_rendered(self, example: RenderedExample | None) -> None:
        if example is None:
            self.rendered_view.setPlainText("")
            self.rendered_label.setText("No rendered example (needs the model's tokenizer).")
            return
        parts = []
        for segment in example.segments:
            text = html.escape(segment.text)
            style = _TRAINED_STYLE if segment.trained else _CONTEXT_STYLE
            parts.append(f"<span style='{style}'>{text}</span>")
        self.rendered_view.setHtml(
            "<pre style='white-space: pre-wrap; font-family: monospace;'>"
            + "".join(parts)
            + "</pre>"
        )
        self.rendered_label.setText(
            f"One example through the chat template: <span style='{_TRAINED_STYLE}'>"
            f"&nbsp;{example.trained_tokens} trained tokens&nbsp;</span> of "
            f"{example.total_tokens} ({html.escape(example.method)})."
        )

    def _on_problems_selection_changed(self) -> None:
        rows = {index.row() for index in self.problems_table.selectedIndexes()}
        if not rows:
            return
        item = self.problems_table.item(min(rows), 0)
        line = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if line is not None:
            self.record_requested.emit(int(line))


class PreflightDialog(QDialog):
    """A non-modal window holding the preflight panel."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("preflight_dialog")
        self.setWindowTitle("Dataset preflight")
        self.panel = PreflightPanel(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.panel)
        self.resize(1100, 780)


class DataCheckSummary(QWidget):
    """The quick preflight's verdict, in the Dataset section: counts, every listed problem with
    its line, and "Skip invalid records (N)" when only some records are invalid.

    Signals:
        skip_requested(): the person chose to skip the invalid records.
    """

    skip_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("data_check_summary")
        self._report: DataReport | None = None
        self.summary_label = QLabel()
        self.summary_label.setObjectName("data_check_text")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems_list = QListWidget()
        self.problems_list.setObjectName("data_check_problems")
        self.problems_list.setMaximumHeight(120)
        self.problems_list.setVisible(False)
        self.skip_button = QPushButton()
        self.skip_button.setObjectName("skip_invalid_records")
        self.skip_button.setToolTip(
            "Train on the valid records only; the trainer logs which lines it skipped "
            "(sets Skip invalid records in the config)."
        )
        self.skip_button.clicked.connect(self.skip_requested)
        self.skip_button.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.problems_list)
        layout.addWidget(self.skip_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.setVisible(False)

    @property
    def report(self) -> DataReport | None:
        """The report shown, or None (none yet, or the dataset changed since)."""
        return self._report

    def problem_texts(self) -> list[str]:
        """The listed problems as shown ("line 17: invalid JSON ...")."""
        return [self.problems_list.item(i).text() for i in range(self.problems_list.count())]

    def clear(self) -> None:
        """Nothing checked (the dataset changed or was emptied)."""
        self._report = None
        self.problems_list.clear()
        self.setVisible(False)

    def set_busy(self, path: str) -> None:
        """Say that the records of `path` are being checked."""
        self.clear()
        self.summary_label.setText(f"Checking the records of {html.escape(path)} …")
        self.summary_label.setStyleSheet("color: #666666;")
        self.setVisible(True)

    def show_error(self, message: str) -> None:
        """The check could not run; say why (Start is not blocked by it)."""
        self.clear()
        self.summary_label.setText(f"The dataset check did not run: {html.escape(message)}")
        self.summary_label.setStyleSheet("color: #9a6700;")
        self.setVisible(True)

    def show_report(self, report: DataReport, skipping: bool) -> None:
        """Show `report`; `skipping`: the config already skips its invalid records."""
        self._report = report
        fmt = FORMAT_LABELS.get(report.format or "", report.format or "unknown format")
        text = f"{report.records} records ({report.valid_records} valid), {html.escape(fmt)}"
        if report.usable:
            colour, verdict = "#2e7d32", "usable"
        elif skipping:
            n = report.invalid_records
            colour = "#9a6700"
            verdict = f"{n} invalid record{'s' if n != 1 else ''} will be skipped"
        else:
            colour, verdict = "#c9302c", "not usable"
        self.summary_label.setText(f"{text}: <b style='color:{colour}'>{verdict}</b>")
        self.summary_label.setStyleSheet("")
        self.problems_list.clear()
        self.problems_list.addItems(report.problem_lines())
        self.problems_list.setVisible(bool(report.problems))
        self.skip_button.setText(f"Skip invalid records ({report.invalid_records})")
        self.skip_button.setVisible(report.skippable and not skipping)
        self.setVisible(True)
