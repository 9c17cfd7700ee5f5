"""The OpenAPI 3.0 description of the /v1 API, served at GET /openapi.json.

Each API module contributes `OPENAPI_PATHS` (relative to the project base) and
`OPENAPI_SCHEMAS`; this module adds the shared parts and the base path. The test suite checks
every /v1 response it sees against this document, so it cannot drift from the code.
"""
from __future__ import annotations

from types import ModuleType

BASE = "/v1/{account_id}/{project_id}"


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema_type: str, **extra) -> dict:
    return {"type": schema_type, "nullable": True, **extra}


def json_content(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict:
    return {"description": description, **json_content(ref("Error"))}


#: The answers every authenticated /v1 operation can give.
AUTH_ERRORS = {
    "401": error("No API key, or a key nobody issued (missing_api_key, invalid_api_key)."),
    "403": error("A valid key for another account or project (forbidden)."),
    "404": error("Unknown project, conversation or destination."),
    "503": error("The database is behind this release's schema (database_behind): run `gateway db upgrade`."),
}
DATABASE_UNAVAILABLE = "The database is not answering (database_unavailable); try again in a moment."


def operation(summary: str, responses: dict, *, body: dict | None = None, parameters: list | None = None) -> dict:
    """One operation with the shared auth errors added."""
    result: dict = {"summary": summary, "responses": {**responses, **AUTH_ERRORS}}
    own_503 = responses.get("503", {}).get("description")
    result["responses"]["503"] = error(f"{own_503} {DATABASE_UNAVAILABLE}" if own_503 else DATABASE_UNAVAILABLE)
    if body is not None:
        result["requestBody"] = {"required": True, **json_content(body)}
    if parameters:
        result["parameters"] = parameters
    return result


#: No string the API stores or matches may hold NUL (PostgreSQL text cannot): 400 otherwise.
NO_NUL = "^[^\\u0000]*$"


def text(**extra) -> dict:
    """A string schema that says NUL is refused."""
    return {"type": "string", "pattern": NO_NUL, **extra}


def query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or text()}


def path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": text()}


COMMON_SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "twilio_code": {"type": "integer", "nullable": True, "description": "With `twilio_error` only."},
                    "explanation": {"type": "string", "nullable": True, "description": "With `twilio_error` only."},
                },
            }
        },
    },
}


def build(modules: list[ModuleType]) -> dict:
    """The whole document from the API modules that define OPENAPI_PATHS / OPENAPI_SCHEMAS."""
    paths: dict = {}
    schemas: dict = dict(COMMON_SCHEMAS)
    for module in modules:
        for relative, item in getattr(module, "OPENAPI_PATHS", {}).items():
            paths.setdefault(BASE + relative, {}).update(item)
        schemas.update(getattr(module, "OPENAPI_SCHEMAS", {}))
    for item in paths.values():
        item.setdefault("parameters", [path_param("account_id"), path_param("project_id")])
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Handoff Gateway API",
            "version": "1",
            "description": "Hand conversations to live agents and read their handoff state. "
            "account_id and project_id take the prefixed form (ws-acme, PROJECT-frontdesk) or the bare slug.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"apiKey": []}],
    }
