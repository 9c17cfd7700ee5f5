"""Handoff destinations under /v1/{account_id}/{project_id}/handoff_destinations (SPEC §5)."""
from __future__ import annotations

from flask import Response, g, jsonify

from gateway.handoffs import catalog
from gateway.web.api import openapi
from gateway.handoffs.catalog import Entry
from gateway.errors import GatewayError
from gateway.web import db
from gateway.web.api import bp, json_body


def destination_json(entry: Entry) -> dict:
    return {**entry.destination.model_dump(mode="json"), "source": entry.source}


def _entry_or_404(name: str) -> Entry:
    entry = catalog.find(db(), g.project, name)
    if entry is None:
        raise GatewayError(404, "destination_not_found", f"No destination named {name!r} in this project.")
    return entry


@bp.get("/handoff_destinations")
def list_destinations():
    return jsonify({"items": [destination_json(e) for e in catalog.list_destinations(db(), g.project)]})


@bp.post("/handoff_destinations")
def create_destination():
    destination = catalog.create(db(), g.project, json_body())
    db().commit()
    return jsonify(destination_json(Entry(destination, "database"))), 201


@bp.get("/handoff_destinations/<name>")
def get_destination(name: str):
    return jsonify(destination_json(_entry_or_404(name)))


@bp.patch("/handoff_destinations/<name>")
def update_destination(name: str):
    destination = catalog.update(db(), g.project, name, json_body())
    db().commit()
    return jsonify(destination_json(Entry(destination, "database")))


@bp.delete("/handoff_destinations/<name>")
def delete_destination(name: str):
    catalog.delete(db(), g.project, name)
    db().commit()
    return Response(status=204)


_DESTINATION_PROPERTIES = {
    "name": openapi.text(minLength=1, maxLength=100),
    "description": openapi.text(maxLength=500),
    "method": {"type": "string", "enum": ["refer", "invite", "bye"], "description": "refer is the default"},
    "route": openapi.nullable("string", description="E.164, E.164;ext=N, sip:/sips: URI, or an extension with sip_domain; none for bye"),
    "timeout": openapi.nullable("integer", minimum=5, maximum=600),
    "sip_headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "names start with X-; values may hold $variables"},
    "utterance": openapi.nullable("string", maxLength=1000),
    "reason": openapi.nullable("string", maxLength=200),
    "handoff_keywords": {"type": "array", "items": {"type": "string"}},
}

OPENAPI_SCHEMAS = {
    "DestinationInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": _DESTINATION_PROPERTIES,
    },
    "DestinationPatch": {"type": "object", "additionalProperties": False, "properties": _DESTINATION_PROPERTIES},
    "Destination": {
        "type": "object",
        "required": ["name", "method", "route", "sip_headers", "source"],
        "properties": {**_DESTINATION_PROPERTIES, "source": {"type": "string", "enum": ["config", "database"]}},
    },
    "DestinationList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": openapi.ref("Destination")}},
    },
}

_ONE = "Destination"
_REFUSED = openapi.error("Fails the config file's rules (invalid_destination) or is malformed (invalid_json).")
_CONFLICT = openapi.error("duplicate_destination, or managed_by_config for a destination of the config file.")

OPENAPI_PATHS = {
    "/handoff_destinations": {
        "get": openapi.operation(
            "All destinations: the config file's (read-only) and stored ones.",
            {"200": {"description": "The destinations.", **openapi.json_content(openapi.ref("DestinationList"))}},
        ),
        "post": openapi.operation(
            "Create a destination.",
            {
                "201": {"description": "Created.", **openapi.json_content(openapi.ref(_ONE))},
                "400": _REFUSED,
                "409": _CONFLICT,
            },
            body=openapi.ref("DestinationInput"),
        ),
    },
    "/handoff_destinations/{name}": {
        "parameters": [openapi.path_param("account_id"), openapi.path_param("project_id"), openapi.path_param("name")],
        "get": openapi.operation(
            "One destination.", {"200": {"description": "The destination.", **openapi.json_content(openapi.ref(_ONE))}}
        ),
        "patch": openapi.operation(
            "Change some fields of a stored destination.",
            {
                "200": {"description": "Updated.", **openapi.json_content(openapi.ref(_ONE))},
                "400": _REFUSED,
                "409": _CONFLICT,
            },
            body=openapi.ref("DestinationPatch"),
        ),
        "delete": openapi.operation(
            "Delete a stored destination.", {"204": {"description": "Deleted."}, "409": _CONFLICT}
        ),
    },
}
