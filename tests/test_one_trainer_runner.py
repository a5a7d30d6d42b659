"""One function in `desktop/` runs `python -m trainer <command>` for the app's checks.

The checks (`doctor`, `check-data`, `make-demo`) once had five copies that drifted apart (only
some put the source checkout on PYTHONPATH, each parsed the JSON its own way). This test reads
the syntax tree of every module in `desktop/` and proves that:

- the only function that writes a trainer command line (a list or tuple holding `"-m"` then
  `"trainer"`) for a check is `TrainerRuntime.argv`, and
- the only function that starts a process with such a command line (its own, or one from a
  function that writes one, however many calls away) is `TrainerRuntime.run_json`.

Launching a training run (`trainer run`, `trainer.launch`) inside `desktop/providers/` is the
providers' business and is not counted. The analysis is checked on planted copies too, so a
test that passes is not one that cannot fail.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The one builder and the one runner, as `module:qualified name`.
THE_BUILDER = "desktop.core.runtime:TrainerRuntime.argv"
THE_RUNNER = "desktop.core.runtime:TrainerRuntime.run_json"
# The model server (`trainer serve`) is a long-lived child with pipes: its own starter, beside it.
THE_SERVER_STARTER = "desktop.core.runtime:TrainerRuntime.start_server"

# Calls that start a process, as (module, function).
_SPAWNERS = {
    ("subprocess", "run"),
    ("subprocess", "Popen"),
    ("subprocess", "call"),
    ("subprocess", "check_call"),
    ("subprocess", "check_output"),
    ("asyncio", "create_subprocess_exec"),
    ("asyncio", "create_subprocess_shell"),
    ("os", "system"),
    ("os", "posix_spawn"),
    ("os", "posix_spawnp"),
    ("os", "execv"),
    ("os", "execve"),
    ("os", "execvp"),
    ("os", "execvpe"),
}
_TRAINING = "run"  # the trainer command that trains; only providers may launch it
_ANY = "*"  # a trainer command line whose command is not a literal


@dataclass
class FunctionFacts:
    """What one function does, as far as its syntax shows.

    `calls` holds each call as (how, where, name, first): ("local", module, f, ...) for `f()`
    or `self.f()` resolved in `module` (where an imported `f` came from), ("attr", "", f, ...)
    for `obj.f()` on any other object; `first` is the first argument when it is a string
    literal (`argv("doctor")`), else "".
    """

    module: str
    qualname: str
    built: set[str] = field(default_factory=set)  # trainer commands whose argv it writes
    calls: set[tuple[str, str, str, str]] = field(default_factory=set)
    spawns: bool = False  # it starts a process itself

    @property
    def key(self) -> str:
        return f"{self.module}:{self.qualname}"

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def in_providers(self) -> bool:
        return self.module.startswith("desktop.providers")


def _trainer_commands(node: ast.List | ast.Tuple) -> set[str]:
    """The trainer commands a list/tuple literal names (`[py, "-m", "trainer", "doctor"]`)."""
    found: set[str] = set()
    items = node.elts
    for i in range(len(items) - 1):
        a, b = items[i], items[i + 1]
        if (
            isinstance(a, ast.Constant)
            and a.value == "-m"
            and isinstance(b, ast.Constant)
            and b.value == "trainer"
        ):
            nxt = items[i + 2] if i + 2 < len(items) else None
            if isinstance(nxt, ast.Constant) and isinstance(nxt.value, str):
                found.add(nxt.value)
            else:
                found.add(_ANY)
    return found


class _Collector(ast.NodeVisitor):
    """Collects `FunctionFacts` for every function (nested and methods included)."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.stack: list[str] = []
        self.facts: list[FunctionFacts] = []
        self.current: list[FunctionFacts] = []
        # `from subprocess import run as sp_run` → {"sp_run": ("subprocess", "run")}
        self.aliases: dict[str, tuple[str, str]] = {}
        self.module_aliases: dict[str, str] = {}  # `import subprocess as sp` → {"sp": ...}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.module_aliases[alias.asname or alias.name] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if node.module:
                self.aliases[alias.asname or alias.name] = (node.module, alias.name)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append(node.name)
        facts = FunctionFacts(self.module, ".".join(self.stack))
        self.facts.append(facts)
        self.current.append(facts)
        self.generic_visit(node)
        self.current.pop()
        self.stack.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def _target(self) -> FunctionFacts:
        if self.current:
            return self.current[-1]
        # Module-level code counts as a pseudo-function named after the module.
        for facts in self.facts:
            if facts.qualname == "<module>":
                return facts
        facts = FunctionFacts(self.module, "<module>")
        self.facts.append(facts)
        return facts

    def _literal(self, node: ast.List | ast.Tuple) -> None:
        commands = _trainer_commands(node)
        if commands:
            self._target().built |= commands
        self.generic_visit(node)

    visit_List = _literal
    visit_Tuple = _literal

    def visit_Call(self, node: ast.Call) -> None:
        target = self._target()
        func = node.func
        first = node.args[0] if node.args else None
        literal = first.value if isinstance(first, ast.Constant) else ""
        arg = literal if isinstance(literal, str) else ""
        if isinstance(func, ast.Name):
            origin = self.aliases.get(func.id)
            if origin in _SPAWNERS:
                target.spawns = True
            elif origin is not None:
                target.calls.add(("local", origin[0], origin[1], arg))
            else:
                target.calls.add(("local", self.module, func.id, arg))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            module = self.module_aliases.get(owner or "")
            if owner in ("self", "cls"):
                target.calls.add(("local", self.module, func.attr, arg))
            elif module is not None and (module, func.attr) in _SPAWNERS:
                target.spawns = True
            elif module is not None:
                target.calls.add(("local", module, func.attr, arg))
            elif owner is not None and owner in self.aliases:  # `from desktop.core import x`
                origin = self.aliases[owner]
                target.calls.add(("local", f"{origin[0]}.{origin[1]}", func.attr, arg))
            else:
                target.calls.add(("attr", "", func.attr, arg))
        self.generic_visit(node)


def collect(sources: dict[str, str]) -> list[FunctionFacts]:
    """Facts for every function of `sources` (module name → source text)."""
    facts: list[FunctionFacts] = []
    for module, text in sources.items():
        collector = _Collector(module)
        collector.visit(ast.parse(text))
        facts += collector.facts
    return facts


def analyse(sources: dict[str, str], *, exclude_training: bool = True) -> tuple[set[str], set[str]]:
    """(functions that write a trainer check's command line, functions that start one).

    A function "writes" one when it holds the literal. It "reaches" one when it writes one or
    calls a function that reaches one: `f()` and `self.f()` are followed to the functions
    named `f` in their module (or where `f` was imported from), transitively; `obj.f()` on any
    other object to every method named `f` that writes one itself (`runtime.argv(...)`), so a
    same-named method elsewhere (`log.info`) cannot raise a false alarm. A call whose first
    argument is a string literal names the command (`argv("run", ...)`). A function "spawns"
    when it starts a process or calls (`f()`, `self.f()`) a function that spawns, the gateway
    excepted: calling `run_json` is the allowed way. A "starter" spawns and reaches. Training
    launches inside `desktop.providers` are left out unless `exclude_training` is False.
    """
    facts = collect(sources)

    def _is_training_launch(facts: FunctionFacts, commands: set[str]) -> bool:
        return exclude_training and facts.in_providers and commands <= {_TRAINING}

    writers = {f.key for f in facts if f.built and not _is_training_launch(f, f.built)}
    local: dict[tuple[str, str], list[FunctionFacts]] = {}
    direct_by_name: dict[str, set[str]] = {}
    for f in facts:
        local.setdefault((f.module, f.name), []).append(f)
        direct_by_name.setdefault(f.name, set()).update(f.built)
    reach = {f.key: set(f.built) for f in facts}
    spawns = {f.key: f.spawns for f in facts}
    changed = True
    while changed:  # to a fixed point: callers of callers count too
        changed = False
        for f in facts:
            for how, where, name, first in f.calls:
                callees = [] if how == "attr" else local.get((where, name), [])
                if how == "attr":
                    extra = set(direct_by_name.get(name, set()))
                else:
                    extra = set().union(*(reach[g.key] for g in callees))
                if first and _ANY in extra:
                    extra = (extra - {_ANY}) | {first}
                if extra - reach[f.key]:
                    reach[f.key] |= extra
                    changed = True
                spawning = any(spawns[g.key] for g in callees if g.key != THE_RUNNER)
                if spawning and not spawns[f.key]:
                    spawns[f.key] = True
                    changed = True
    starters = {
        f.key
        for f in facts
        if spawns[f.key] and reach[f.key] and not _is_training_launch(f, reach[f.key])
    }
    return writers, starters


def desktop_sources() -> dict[str, str]:
    """Every module of the `desktop` package, by dotted name."""
    sources: dict[str, str] = {}
    for path in sorted((ROOT / "desktop").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


# ---------------------------------------------------------------------------------------------
# The app


def test_only_the_runtime_gateway_runs_trainer_checks() -> None:
    sources = desktop_sources()
    writers, starters = analyse(sources)
    # The analysis is not blind: it follows the local provider's training launch (which it
    # then leaves out) through the runtime's argv and the spawning helper.
    launches = analyse(sources, exclude_training=False)[1] - {THE_RUNNER, THE_SERVER_STARTER}
    assert any(key.startswith("desktop.providers.local.") for key in launches), launches
    assert all(key.startswith("desktop.providers.") for key in launches), launches
    assert writers == {THE_BUILDER}, (
        "write `python -m trainer <check>` only in TrainerRuntime.argv; other copies: "
        f"{sorted(writers - {THE_BUILDER})}"
    )
    assert starters == {THE_RUNNER, THE_SERVER_STARTER}, (
        "run trainer checks only through TrainerRuntime.run_json (doctor, check_data, "
        f"make_demo); other copies: {sorted(starters - {THE_RUNNER})}"
    )


# ---------------------------------------------------------------------------------------------
# The analysis itself, on planted copies

_GATEWAY = textwrap.dedent(
    """
    import subprocess

    class TrainerRuntime:
        def argv(self, command, *args):
            return [self.python, "-m", "trainer", command, *args]

        def run_json(self, command, *args, timeout_s):
            return subprocess.run(self.argv(command, *args), timeout=timeout_s)

        def doctor(self):
            return self.run_json("doctor", "--json", timeout_s=300)
    """
)


def test_the_gateway_alone_passes() -> None:
    assert analyse({"desktop.core.runtime": _GATEWAY}) == ({THE_BUILDER}, {THE_RUNNER})


def test_a_planted_copy_is_caught() -> None:
    planted = textwrap.dedent(
        """
        import subprocess

        def doctor(python):
            done = subprocess.run([python, "-m", "trainer", "doctor", "--json"], check=False)
            return done.stdout
        """
    )
    writers, starters = analyse(
        {"desktop.core.runtime": _GATEWAY, "desktop.views.settings_dialog": planted}
    )
    assert "desktop.views.settings_dialog:doctor" in writers
    assert "desktop.views.settings_dialog:doctor" in starters


def test_a_copy_split_over_two_functions_and_aliases_is_caught() -> None:
    planted = textwrap.dedent(
        """
        from subprocess import Popen as start

        class Window:
            def _cmd(self, folder):
                return (self.python, "-m", "trainer", "make-demo", str(folder))

            def make_demo(self, folder):
                def go():
                    return start(self._cmd(folder))
                return go()
        """
    )
    writers, starters = analyse(
        {"desktop.core.runtime": _GATEWAY, "desktop.views.main_window": planted}
    )
    assert writers == {THE_BUILDER, "desktop.views.main_window:Window._cmd"}
    # `go` starts it; `make_demo` starts it through `go`.
    assert starters == {
        THE_RUNNER,
        "desktop.views.main_window:Window.make_demo",
        "desktop.views.main_window:Window.make_demo.go",
    }


def test_a_training_launch_counts_only_inside_providers() -> None:
    launch = textwrap.dedent(
        """
        import subprocess as sp

        def trainer_command(python, job_dir):
            return [python, "-m", "trainer", "run", "--job-dir", str(job_dir)]

        def start(python, job_dir):
            return sp.Popen(trainer_command(python, job_dir))

        def distributed(python):
            return sp.Popen([python, "-m", "trainer.launch"])
        """
    )
    inside = analyse({"desktop.core.runtime": _GATEWAY, "desktop.providers.local.queue": launch})
    assert inside == ({THE_BUILDER}, {THE_RUNNER})
    writers, starters = analyse({"desktop.core.runtime": _GATEWAY, "desktop.core.jobs": launch})
    assert "desktop.core.jobs:trainer_command" in writers
    assert "desktop.core.jobs:start" in starters
    # A provider that runs a check itself is a copy like any other.
    check = (
        "import subprocess\ndef ready(py):\n    subprocess.run([py, '-m', 'trainer', 'doctor'])\n"
    )
    _, starters = analyse({"desktop.core.runtime": _GATEWAY, "desktop.providers.local.p": check})
    assert "desktop.providers.local.p:ready" in starters


def test_the_runtimes_argv_handed_to_a_spawning_helper_is_caught() -> None:
    helper = textwrap.dedent(
        """
        import subprocess

        def spawn_detached(argv):
            return subprocess.Popen(list(argv))
        """
    )
    views = textwrap.dedent(
        """
        from desktop.core.runtime import TrainerRuntime
        from desktop.core.process import spawn_detached

        def demo(folder):
            return spawn_detached(TrainerRuntime().argv("make-demo", str(folder)))

        def ask_the_gateway():
            return TrainerRuntime().doctor()
        """
    )
    sources = {
        "desktop.core.runtime": _GATEWAY,
        "desktop.core.process": helper,
        "desktop.views.main_window": views,
    }
    _, starters = analyse(sources)
    assert starters == {THE_RUNNER, "desktop.views.main_window:demo"}
    # The same hand-over of a training command is the providers' business.
    provider = views.replace('"make-demo"', '"run"')
    _, starters = analyse(
        {**sources, "desktop.views.main_window": "", "desktop.providers.x": provider}
    )
    assert starters == {THE_RUNNER}
