"""The OpenAPI description of the /v1 API, served at GET /openapi.json, generated from the code.

Each /v1 view declares what it takes and answers with `@api.operation(...)`: a summary, the
pydantic model of its body (the one that validates it) and of each answer, and its query
parameters. The paths and path parameters come from the routes Flask serves and the schemas
from the models (gateway/web/api/schemas.py) through pydantic's own JSON Schema, so nothing here
restates a body. The document is OpenAPI 3.1, whose schemas are JSON Schema 2020-12 as pydantic
writes it (`null` in a `type`, `$ref` beside a description), so they go in unchanged. The test
suite checks every /v1 response it sees against it, so it cannot drift from the code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.infra.safe_text import NO_NUL
from gateway.web.api.schemas import Error

#: What every /v1 operation can answer besides its own: the key, the project and every query and
#: path value are checked, and the database asked, before any view runs.
SHARED_ERRORS = {
    400: "A query or path value holds a NUL character (invalid_parameter).",
    401: "No API key, or a key nobody issued (missing_api_key, invalid_api_key).",
    403: "A valid key for another account or project (forbidden).",
    404: "Unknown project (project_not_found).",
    503: "The database is not answering (database_unavailable; try again in a moment), or it is behind "
    "this release's schema (database_behind; run `gateway db upgrade`).",
}


def _too_large(max_bytes: int) -> str:
    """What an operation that takes a body also answers: Flask refuses a longer one as it reads it."""
    return f"The body is over {max_bytes // 1024} KiB (request_too_large)."


@dataclass(frozen=True)
class Operation:
    """What the document says of one view (made by `gateway.web.api.operation`)."""

    summary: str
    #: status -> (model, description) for an answer with a body, or a description alone: an
    #: error's (every 4xx and 5xx carries the `Error` body) or a bodiless success's (204).
    responses: dict[int, tuple[type[BaseModel], str] | str]
    #: The model the JSON body is validated with.
    body: type[BaseModel] | None = None
    body_required: bool = True
    description: str | None = None
    parameters: tuple[dict, ...] = ()

    def models(self) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
        """Its bodies, each with the side of pydantic's schema that describes it."""
        taken = [(self.body, "validation")] if self.body else []
        given = [(answer[0], "serialization") for answer in self.responses.values() if isinstance(answer, tuple)]
        return taken + given


def text(**extra) -> dict:
    """A string parameter that says NUL is refused (every parameter is checked for it)."""
    return {"type": "string", "pattern": NO_NUL, **extra}


def query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or text()}


def path_template(rule: str) -> str:
    """Flask's `/conversations/<conversation_id>` as OpenAPI's `/conversations/{conversation_id}`."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def build(app: Flask, blueprint: str) -> dict:
    """The whole document, from the views of `blueprint` that the app serves."""
    operations = [
        (path_template(rule.rule), method.lower(), _declared(app.view_functions[rule.endpoint]))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.partition(".")[0] == blueprint
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    ]
    max_bytes = app.config["MAX_CONTENT_LENGTH"]
    models = {(Error, "serialization")}.union(*(operation.models() for _path, _method, operation in operations))
    refs, definitions = models_json_schema(sorted(models, key=str), ref_template="#/components/schemas/{model}")
    paths: dict = {}
    for path, method, operation in operations:
        item = paths.setdefault(path, {"parameters": [_path_parameter(name) for name in re.findall(r"{(\w+)}", path)]})
        item[method] = _operation(operation, refs, max_bytes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Handoff Gateway API",
            "version": "1",
            "description": "Hand conversations to live agents and read their handoff state. "
            "account_id and project_id take the prefixed form (ws-acme, PROJECT-frontdesk) or the bare slug.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"apiKey": []}],
    }


def _declared(view) -> Operation:
    """The view's operation: a route the document would leave out stops the app from starting."""
    operation = getattr(view, "openapi_operation", None)
    if operation is None:
        raise TypeError(f"{view.__module__}.{view.__name__} serves the API without @api.operation; declare it")
    return operation


def _path_parameter(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": text()}


def _operation(operation: Operation, refs: dict, max_bytes: int) -> dict:
    result: dict = {"summary": operation.summary}
    if operation.description:
        result["description"] = operation.description
    if operation.parameters:
        result["parameters"] = list(operation.parameters)
    if operation.body:
        result["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": refs[(operation.body, "validation")]}},
        }
    answers = _with_shared_errors(operation, max_bytes)
    result["responses"] = {str(status): _response(status, answer, refs) for status, answer in sorted(answers.items())}
    return result


def _with_shared_errors(operation: Operation, max_bytes: int) -> dict:
    """The operation's answers and the shared errors; where both give one status, both say why."""
    answers = dict(operation.responses)
    shared = {**SHARED_ERRORS, 413: _too_large(max_bytes)} if operation.body else SHARED_ERRORS
    for status, why in shared.items():
        answers[status] = f"{answers[status]} {why}" if status in answers else why
    return answers


def _response(status: int, answer: tuple[type[BaseModel], str] | str, refs: dict) -> dict:
    if isinstance(answer, tuple):
        model, description = answer
        return {"description": description, "content": {"application/json": {"schema": refs[(model, "serialization")]}}}
    if status >= 400:
        return {"description": answer, "content": {"application/json": {"schema": refs[(Error, "serialization")]}}}
    return {"description": answer}
