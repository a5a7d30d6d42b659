"""Checks requests (and the emulator's own answers) against RunPod's official OpenAPI file.

OpenAPI 3.1 schemas are JSON Schema 2020-12, so `jsonschema` validates them; every `$ref` in the
file points inside it, and a `referencing` registry resolves them. A schema is always checked
through a reference to its place in the file, so the references inside it resolve too.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "data" / "runpod" / "openapi-v2.json"
# RunPod's file as published ("Frontdoor v2.9.0", 2026-08); a changed copy fails a test.
OPENAPI_SHA256 = "b8bce61c5a2290d28a7cb2ed53173637166817249986cb18b101b2fd651fd313"
_BASE = "urn:runpod-openapi-v2"


def file_sha256(path: Path = OPENAPI_FILE) -> str:
    """The sha256 of the OpenAPI copy's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Operation:
    """One operation of the file: its method, path template and where it sits in the file."""

    method: str
    template: str
    pointer: str
    spec: dict[str, Any]
    pattern: re.Pattern[str]

    @property
    def operation_id(self) -> str:
        """The file's `operationId` (e.g. `createPod`)."""
        return str(self.spec.get("operationId", f"{self.method} {self.template}"))


class OpenApiContract:
    """The official file, loaded once: finds operations and validates against them."""

    def __init__(self, path: Path = OPENAPI_FILE) -> None:
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    @cached_property
    def operations(self) -> list[Operation]:
        """Every operation, literal paths before templated ones (so /catalog/gpus wins)."""
        found = []
        for template, item in self.document["paths"].items():
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            for method, spec in item.items():
                if method in {"get", "post", "put", "patch", "delete"}:
                    pointer = f"/paths/{_escape(template)}/{method}"
                    found.append(
                        Operation(method.upper(), template, pointer, spec, re.compile(regex + "$"))
                    )
        return sorted(found, key=lambda op: op.template.count("{"))

    def find(self, method: str, path: str) -> Operation | None:
        """The operation for `METHOD /v2/...`, or None when the file has none."""
        for op in self.operations:
            if op.method == method and op.pattern.match(path):
                return op
        return None

    def errors(self, pointer: str, value: Any) -> list[str]:
        """Each way `value` breaks the schema at `pointer` (a JSON pointer into the file)."""
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft202012Validator(
                {"$ref": f"{_BASE}#{pointer}"}, registry=self._registry
            )
            self._validators[pointer] = validator
        return [
            f"{error.json_path}: {error.message}"
            for error in sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        ]

    def _resolve(self, pointer: str, node: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Follow a `$ref` object to its target (and its pointer)."""
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.document
            for token in pointer.strip("/").split("/"):
                node = node[token.replace("~1", "/").replace("~0", "~")]
        return pointer, node

    def request_errors(
        self, op: Operation, query: dict[str, list[str]], body: Any, has_body: bool
    ) -> list[str]:
        """Each way a request's query and JSON body break the operation's description."""
        problems = []
        params: dict[str, tuple[str, dict[str, Any]]] = {}
        for index, raw in enumerate(op.spec.get("parameters", [])):
            pointer, param = self._resolve(f"{op.pointer}/parameters/{index}", raw)
            if param.get("in") == "query":
                params[param["name"]] = (pointer, param)
        for name in query:
            if name not in params:
                problems.append(f"query: unknown parameter {name!r}")
        for name, (pointer, param) in params.items():
            if name not in query:
                if param.get("required"):
                    problems.append(f"query: missing required parameter {name!r}")
                continue
            _, schema = self._resolve(f"{pointer}/schema", param.get("schema", {}))
            value = _coerce(query[name], schema, explode=param.get("explode", True))
            problems += [f"query {name}{p[1:]}" for p in self.errors(f"{pointer}/schema", value)]
        request_body = op.spec.get("requestBody")
        if request_body is None:
            if has_body:
                problems.append("body: this operation takes no request body")
            return problems
        pointer, request_body = self._resolve(f"{op.pointer}/requestBody", request_body)
        if not has_body:
            if request_body.get("required"):
                problems.append("body: a JSON body is required")
            return problems
        schema_pointer = f"{pointer}/content/application~1json/schema"
        return problems + [f"body {p}" for p in self.errors(schema_pointer, body)]

    def response_errors(self, op: Operation, status: int, body: Any) -> list[str]:
        """Each way a JSON answer breaks the operation's description of that status."""
        responses = op.spec.get("responses", {})
        if str(status) not in responses:
            return [f"response: status {status} is not described"]
        pointer, response = self._resolve(
            f"{op.pointer}/responses/{status}", responses[str(status)]
        )
        content = response.get("content", {})
        if "application/json" not in content:
            return [] if body is None else [f"response {status}: described without a body"]
        return [
            f"response {status} {p}"
            for p in self.errors(f"{pointer}/content/application~1json/schema", body)
        ]


def _coerce(values: list[str], schema: dict[str, Any], *, explode: bool) -> Any:
    """A query string's text as the typed value its schema describes (left as text if not)."""
    kind = schema.get("type")
    if kind == "array":
        items = values if explode else [part for v in values for part in v.split(",")]
        return [_scalar(item, schema.get("items", {})) for item in items]
    return _scalar(values[-1], schema)


def _scalar(text: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", text):
        return int(text)
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "boolean" and text in {"true", "false"}:
        return text == "true"
    return text
