"""An import-linter contract type: these modules may import only these modules.

import-linter's built-in `forbidden` contract lists what a module must not import, so a new
dependency slips through until someone thinks to forbid it. An allow-list fails on anything
nobody has agreed to, which is how the layers of this project are meant: "the core may reach
only the core, the models, the providers and the trainer contract".

Registered in `pyproject.toml`::

    [tool.importlinter]
    contract_types = ["allowlist: tests.import_rules.allowlist.AllowlistContract"]

    [[tool.importlinter.contracts]]
    name = "..."
    type = "allowlist"
    source_modules = ["desktop.core"]          # packages: each module and its descendants
    excluded_modules = ["desktop.core.x"]      # taken out of the sources (packages too)
    allowed_modules = ["desktop.core", "desktop.core.**", "pydantic"]
    scope = ["trainer"]                        # optional: judge only imports into these packages
    ignore_imports = ["desktop.cli -> desktop.views.app"]
    allow_standard_library = true              # default true
    allow_indirect_imports = false             # default false: indirect imports are checked

Module expressions follow grimp: `a.b` is that module only, `a.*` its children, `a.**` all its
descendants. External packages are seen as their top-level name (`PySide6`, not
`PySide6.QtCore`), so allowing `PySide6` allows all of it.

Indirect imports: from every source module the contract walks the import graph through the
modules it may import (and those outside `scope`) that belong to the analysed packages; every
import met on that walk must be allowed. A break is reported once per offending import, with the
shortest chain from a source module that leads to it.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass

from grimp import ImportGraph
from importlinter.application import contract_utils, output
from importlinter.application.contract_utils import AlertLevel
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck
from importlinter.domain.helpers import module_expressions_to_modules
from importlinter.domain.imports import ModuleExpression

__all__ = ["AllowlistContract", "Violation"]


@dataclass(frozen=True, order=True)
class Violation:
    """One import the allow-list does not admit, and how a source module reaches it.

    Attributes:
        importer: The module that holds the import.
        imported: The module it imports.
        chain: Module names from a source module to `importer` (just `importer` when the
            importer is itself a source module).
        line_numbers: Where `importer` imports `imported`.
    """

    importer: str
    imported: str
    chain: tuple[str, ...]
    line_numbers: tuple[int, ...]


class AllowlistContract(Contract):
    """Source modules may import only the allowed modules (and the standard library).

    Configuration options:
        - source_modules: Module expressions, taken as packages, whose imports are judged.
        - excluded_modules: Module expressions, taken as packages, removed from the sources.
            (Optional.)
        - allowed_modules: Module expressions the sources may import.
        - scope: Packages whose imports are judged; imports of anything else pass. Without it,
            every import is judged. (Optional.)
        - ignore_imports: Import expressions left out of the graph before checking. (Optional.)
        - unmatched_ignore_imports_alerting: "none", "warn" or "error" (default) when an
            `ignore_imports` entry matches no import.
        - allow_standard_library: Whether the standard library may always be imported
            (default true).
        - allow_indirect_imports: When false (the default), the imports of every module the
            sources reach are judged too; when true, only the sources' own imports.
    """

    type_name = "allowlist"

    source_modules = fields.SetField(subfield=fields.ModuleExpressionField())
    excluded_modules = fields.SetField(subfield=fields.ModuleExpressionField(), required=False)
    allowed_modules = fields.SetField(subfield=fields.ModuleExpressionField())
    scope = fields.SetField(subfield=fields.ModuleExpressionField(), required=False)
    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)
    unmatched_ignore_imports_alerting = fields.EnumField(AlertLevel, default=AlertLevel.ERROR)
    allow_standard_library = fields.BooleanField(required=False, default=True)
    allow_indirect_imports = fields.BooleanField(required=False, default=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        """Judge every import the sources make (or reach), against the allow-list."""
        removal = contract_utils.remove_ignored_imports_and_report(
            graph=graph,
            ignore_imports=self.ignore_imports,  # type: ignore[arg-type]
            unmatched_alerting=self.unmatched_ignore_imports_alerting,  # type: ignore[arg-type]
        )
        sources = self._sources(graph)
        allowed = self._names(graph, self.allowed_modules)  # type: ignore[arg-type]
        scope_expressions: set[ModuleExpression] = self.scope or set()  # type: ignore[assignment]
        scope = [m.expression for m in scope_expressions]

        def admitted(name: str) -> bool:
            if name in allowed:
                return True
            if scope and not any(_within(name, package) for package in scope):
                return True
            root = name.split(".", 1)[0]
            return bool(self.allow_standard_library) and root in sys.stdlib_module_names

        # Breadth-first from all the sources at once, so each module is first met on a shortest
        # chain; only analysed (not squashed, i.e. internal) modules are walked into.
        parent: dict[str, str | None] = dict.fromkeys(sorted(sources))
        queue = deque(sorted(sources))
        violations: list[Violation] = []
        while queue:
            importer = queue.popleft()
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if not admitted(imported):
                    violations.append(
                        Violation(
                            importer=importer,
                            imported=imported,
                            chain=_chain(parent, importer),
                            line_numbers=_line_numbers(graph, importer, imported),
                        )
                    )
                elif (
                    not self.allow_indirect_imports
                    and imported not in parent
                    and not graph.is_module_squashed(imported)
                ):
                    parent[imported] = importer
                    queue.append(imported)
            output.verbose_print(verbose, f"Checked the imports of {importer}.")
        return ContractCheck(
            kept=not violations,
            warnings=list(removal.warnings),
            ignored_import_count=removal.ignored_import_count,
            metadata={"violations": sorted(violations)},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        """Print each offending import, with the chain that reaches it from a source module."""
        for violation in check.metadata["violations"]:
            lines = ", ".join(f"l.{n}" for n in violation.line_numbers) or "l.?"
            output.print_error(
                f"{violation.importer} is not allowed to import {violation.imported}:"
            )
            output.new_line()
            first, *rest = violation.chain
            if rest:
                output.print_error(f"-   reached from {first}", bold=False)
                for step in rest:
                    output.indent_cursor()
                    output.print_error(f"-> {step}", bold=False)
                output.indent_cursor()
                output.print_error(f"-> {violation.imported} ({lines})", bold=False)
            else:
                output.print_error(f"-   {first} -> {violation.imported} ({lines})", bold=False)
            output.new_line()

    def _sources(self, graph: ImportGraph) -> set[str]:
        expressions: set[ModuleExpression] = self.source_modules  # type: ignore[assignment]
        for expression in expressions:
            if not expression.has_wildcard_expression() and expression.expression not in (
                graph.modules
            ):
                raise ValueError(f"Module '{expression.expression}' does not exist.")
        sources = {m.name for m in module_expressions_to_modules(graph, expressions, True)}
        excluded = {
            m.name
            for m in module_expressions_to_modules(
                graph,
                self.excluded_modules or (),  # type: ignore[arg-type]
                True,
            )
        }
        return sources - excluded

    @staticmethod
    def _names(graph: ImportGraph, expressions: set[ModuleExpression]) -> set[str]:
        names: set[str] = set()
        for expression in expressions:
            if expression.has_wildcard_expression():
                names |= graph.find_matching_modules(expression.expression)
            else:
                names.add(expression.expression)
        return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _chain(parent: dict[str, str | None], module: str) -> tuple[str, ...]:
    chain = [module]
    step = parent[module]
    while step is not None:
        chain.append(step)
        step = parent[step]
    return tuple(reversed(chain))


def _line_numbers(graph: ImportGraph, importer: str, imported: str) -> tuple[int, ...]:
    details = graph.get_import_details(importer=importer, imported=imported)
    return tuple(sorted({d["line_number"] for d in details if d["line_number"] is not None}))
