"""The import contracts in `pyproject.toml` hold, and each one catches what it is there to catch.

Each planted-import test copies `desktop/` and `trainer/` (the `.py` files), the project's
`pyproject.toml` and the custom contract type (`tests/import_rules/`) into a temporary folder,
plants one forbidden import there, runs `lint-imports` on that copy and checks which contracts it
reports broken and that the report names the planted module.

The contracts overlap on purpose where the layers do: the core (`core-qt-free`) may import the
`trainer` package's `__init__` but no other trainer module, so an import planted in
`trainer/__init__.py` is caught by the contract under test *and* by `core-qt-free`. Those cases
list both.

"Indirect" plants go through a module the contract allows but does not judge itself (the
`desktop` or `trainer` package's `__init__`), so only the indirect check can see them. The
trainer contract has no such module (everything it allows is one of its sources or external),
so it has only a direct plant. The tests at the end check the contract type itself on small
hand-made graphs: the indirect walk, `allow_indirect_imports`, `scope` and `excluded_modules`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest
from import_rules.allowlist import AllowlistContract

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
STATUS_LINE = re.compile(r"^(?P<name>.+?) (?P<status>KEPT|BROKEN)(?: \(\d+ ignored imports?\))?$")


def contract_names() -> dict[str, str]:
    """The configured contracts, id -> name."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {contract["id"]: contract["name"] for contract in config["contracts"]}


def copy_tree(destination: Path) -> Path:
    """`desktop/`, `trainer/` (only `.py` files), the config and the contract type, copied."""

    def not_python(folder: str, names: list[str]) -> list[str]:
        return [
            n
            for n in names
            if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())
        ]

    for package in ("desktop", "trainer"):
        shutil.copytree(ROOT / package, destination / package, ignore=not_python)
    shutil.copytree(
        ROOT / "tests" / "import_rules", destination / "tests" / "import_rules", ignore=not_python
    )
    shutil.copy(PYPROJECT, destination / "pyproject.toml")
    return destination


def lint_imports(root: Path) -> tuple[dict[str, str], str]:
    """Run `lint-imports` in `root`: each contract's status by name, and the whole output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["COLUMNS"] = "1000"  # one status line per contract, however long its name
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    statuses = {
        match["name"]: match["status"]
        for line in output.splitlines()
        if (match := STATUS_LINE.match(line.strip()))
    }
    assert statuses, f"lint-imports printed no contract statuses:\n{output}"
    assert (result.returncode == 0) == all(s == "KEPT" for s in statuses.values()), output
    return statuses, output


def plant(root: Path, files: dict[str, str]) -> None:
    """Write (or append to) each module, given by its path relative to `root`."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n" + source + "\n")


# (files to plant, ids of the contracts it newly breaks, text the report must hold)
PLANTS = [
    pytest.param(
        {"trainer/reports.py": "import httpx  # planted"},
        {"trainer-contract"},
        "trainer.reports is not allowed to import httpx",
        id="trainer-contract-direct",
    ),
    pytest.param(
        {"trainer/reports.py": "import trainer.protocol  # planted"},
        set(),
        "",
        id="trainer-contract-modules-may-import-each-other",
    ),
    pytest.param(
        {"trainer/checkpoint_check.py": "import httpx  # planted"},
        {"trainer-contract"},
        "trainer.checkpoint_check is not allowed to import httpx",
        id="trainer-contract-direct-checkpoint-check",
    ),
    pytest.param(
        # The resume point's one rule: the core and the CLI may use it.
        {"desktop/core/planted.py": "from trainer import checkpoint_check  # planted"},
        set(),
        "",
        id="trainer-contract-checkpoint-check-is-for-the-app",
    ),
    pytest.param(
        {"desktop/core/planted.py": "import PySide6  # planted"},
        {"core-qt-free"},
        "desktop.core.planted is not allowed to import PySide6",
        id="core-qt-free-direct",
    ),
    pytest.param(
        {"desktop/core/planted.py": "from desktop.views import state  # planted"},
        {"core-qt-free"},
        "desktop.core.planted is not allowed to import desktop.views.state",
        id="core-qt-free-views",
    ),
    pytest.param(
        # `desktop` (the package) is allowed to the core but is no source of the contract:
        # only the indirect check sees what it imports.
        {
            "desktop/core/planted.py": "import desktop  # planted",
            "desktop/__init__.py": "import qasync",
        },
        {"core-qt-free"},
        "reached from desktop.core.planted",
        id="core-qt-free-indirect",
    ),
    pytest.param(
        {"desktop/planted.py": "import torch  # planted"},
        {"no-ml-stack"},
        "desktop.planted -> torch",
        id="no-ml-stack-direct",
    ),
    pytest.param(
        # The app imports the `trainer` package (desktop.core.runtime finds the checkout by it).
        {"trainer/__init__.py": "import peft  # planted"},
        {"no-ml-stack", "core-qt-free"},
        "trainer -> peft",
        id="no-ml-stack-indirect",
    ),
    pytest.param(
        {"desktop/planted.py": "from trainer import ranks  # planted"},
        {"trainer-through-contract"},
        "desktop.planted is not allowed to import trainer.ranks",
        id="trainer-through-contract-direct",
    ),
    pytest.param(
        {"trainer/__init__.py": "import trainer.cancel  # planted"},
        {"trainer-through-contract", "core-qt-free"},
        "-> trainer\n    -> trainer.cancel",
        id="trainer-through-contract-indirect",
    ),
    pytest.param(
        {"desktop/views/planted.py": "from desktop.core import errors  # planted"},
        {"views-thin"},
        "desktop.views.planted is not allowed to import desktop.core.errors",
        id="views-thin-direct",
    ),
    pytest.param(
        {"desktop/models/planted.py": "import desktop.core.store  # planted"},
        {"layers"},
        "desktop.models.planted",
        id="layers-direct",
    ),
    pytest.param(
        # The trainer's own modules are judged by no other contract, so only this one breaks.
        {"trainer/planted.py": "import runpod  # planted"},
        {"no-runpod-sdk"},
        "trainer.planted -> runpod",
        id="no-runpod-sdk-direct",
    ),
    pytest.param(
        # In a provider the core's allow-list catches it too.
        {"desktop/providers/planted.py": "from runpod import api  # planted"},
        {"no-runpod-sdk", "core-qt-free"},
        "desktop.providers.planted -> runpod",
        id="no-runpod-sdk-in-a-provider",
    ),
]


@pytest.fixture(scope="module")
def unplanted_statuses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each contract's status on an unplanted copy of the tree (computed once)."""
    statuses, _ = lint_imports(copy_tree(tmp_path_factory.mktemp("unplanted")))
    return statuses


@pytest.mark.parametrize(("files", "expected_broken", "named"), PLANTS)
def test_a_planted_import_breaks_exactly_its_contract(
    tmp_path: Path,
    unplanted_statuses: dict[str, str],
    files: dict[str, str],
    expected_broken: set[str],
    named: str,
) -> None:
    names = contract_names()
    root = copy_tree(tmp_path)
    kept_before = unplanted_statuses
    plant(root, files)

    statuses, output = lint_imports(root)

    assert set(statuses) == set(names.values()), output
    # Only the planted import may change a verdict: contracts the real tree already breaks
    # (while other work is in flight) stay as they were.
    newly_broken = {
        key
        for key, name in names.items()
        if statuses[name] == "BROKEN" and kept_before[name] == "KEPT"
    }
    assert newly_broken == expected_broken, output
    assert named in output, output


def test_the_views_contract_checks_direct_imports_only(
    tmp_path: Path, unplanted_statuses: dict[str, str]
) -> None:
    # A widget may use operations, which reaches the core for it.
    root = copy_tree(tmp_path)
    before = unplanted_statuses
    plant(root, {"desktop/views/planted.py": "from desktop.views import operations  # planted"})

    statuses, output = lint_imports(root)

    assert statuses == before, output
    assert "desktop.views.planted" not in output


def test_the_runpod_sdk_is_in_no_dependency_list() -> None:
    # We speak REST v2 with our own client; the SDK is GraphQL-only and pulls ~100 packages.
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    lists = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    requirement_name = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")

    named = {
        where: [m[1].lower().replace("_", "-") for r in reqs if (m := requirement_name.match(r))]
        for where, reqs in lists.items()
    }

    assert all(names for names in named.values()), named
    assert not [where for where, names in named.items() if "runpod" in names], named
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    assert not [line for line in constraints if line.lower().startswith("runpod")]


def test_the_real_tree_keeps_every_contract() -> None:
    statuses, output = lint_imports(ROOT)

    assert set(statuses) == set(contract_names().values()), output
    assert all(status == "KEPT" for status in statuses.values()), output


def _graph(*imports: tuple[str, str]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for importer, imported in imports:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="")
    return graph


def _contract(**options: object) -> AllowlistContract:
    return AllowlistContract(
        name="test",
        session_options={"root_packages": ["app"]},
        contract_options={"source_modules": ["app.core"], **options},
    )


def test_the_allowlist_follows_imports_through_allowed_modules_that_are_not_sources() -> None:
    imports = [("app.core", "app.shared"), ("app.shared", "app.gui"), ("app.core", "json")]

    indirect = _contract(allowed_modules=["app.shared"]).check(_graph(*imports), verbose=False)
    direct_only = _contract(allowed_modules=["app.shared"], allow_indirect_imports="true").check(
        _graph(*imports), verbose=False
    )

    assert not indirect.kept
    [violation] = indirect.metadata["violations"]
    assert (violation.importer, violation.imported) == ("app.shared", "app.gui")
    assert violation.chain == ("app.core", "app.shared")
    assert direct_only.kept  # json is the standard library, app.shared is allowed


def test_the_allowlist_judges_only_its_scope_and_leaves_out_excluded_sources() -> None:
    imports = [
        ("app.core", "json"),
        ("app.core.a", "app.lib.contract"),
        ("app.core.a", "thirdparty"),
        ("app.core.root", "app.lib.engine"),
    ]

    scoped = _contract(allowed_modules=["app.lib.contract"], scope=["app.lib"])
    excluded = _contract(
        allowed_modules=["app.lib.contract"], scope=["app.lib"], excluded_modules=["app.core.root"]
    )

    [violation] = scoped.check(_graph(*imports), verbose=False).metadata["violations"]
    assert (violation.importer, violation.imported) == ("app.core.root", "app.lib.engine")
    assert excluded.check(_graph(*imports), verbose=False).kept
