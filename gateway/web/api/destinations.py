"""Handoff destinations under /v1/{account_id}/{project_id}/handoff_destinations (SPEC §5)."""
from __future__ import annotations

from flask import Response, g, jsonify

from gateway.handoffs import catalog
from gateway.handoffs.catalog import Entry
from gateway.errors import GatewayError
from gateway.web import db
from gateway.web.api import bp, operation, schemas

_REFUSED = "Fails the config file's rules (invalid_destination) or is malformed (invalid_json)."
_CONFLICT = "duplicate_destination, or managed_by_config for a destination of the config file."
_UNKNOWN = "No destination of that name (destination_not_found)."


def destination_json(entry: Entry) -> dict:
    return {**entry.destination.model_dump(mode="json"), "source": entry.source}


def _entry_or_404(name: str) -> Entry:
    entry = catalog.find(db(), g.project, name)
    if entry is None:
        raise GatewayError(404, "destination_not_found", f"No destination named {name!r} in this project.")
    return entry


@bp.get("/handoff_destinations")
@operation(
    "All destinations: the config file's (read-only) and stored ones.",
    responses={200: (schemas.DestinationList, "The destinations.")},
)
def list_destinations():
    return jsonify({"items": [destination_json(e) for e in catalog.list_destinations(db(), g.project)]})


@bp.post("/handoff_destinations")
@operation(
    "Create a destination.",
    body=schemas.Destination,
    refused_as="invalid_destination",
    responses={201: (schemas.DestinationEntry, "Created."), 400: _REFUSED, 409: _CONFLICT},
)
def create_destination(body: schemas.Destination):
    # Its fields are checked; the catalog applies the config file's rules (a route that can be
    # dialed, Twilio's SIP limits), as it does for the console and the CLI.
    destination = catalog.create(db(), g.project, body.model_dump(exclude_unset=True))
    db().commit()
    return jsonify(destination_json(Entry(destination, "database"))), 201


@bp.get("/handoff_destinations/<name>")
@operation("One destination.", responses={200: (schemas.DestinationEntry, "The destination."), 404: _UNKNOWN})
def get_destination(name: str):
    return jsonify(destination_json(_entry_or_404(name)))


@bp.patch("/handoff_destinations/<name>")
@operation(
    "Change some fields of a stored destination.",
    body=schemas.DestinationPatch,
    refused_as="invalid_destination",
    responses={200: (schemas.DestinationEntry, "Updated."), 400: _REFUSED, 404: _UNKNOWN, 409: _CONFLICT},
)
def update_destination(name: str, body: schemas.DestinationPatch):
    destination = catalog.update(db(), g.project, name, body.model_dump(exclude_unset=True))
    db().commit()
    return jsonify(destination_json(Entry(destination, "database")))


@bp.delete("/handoff_destinations/<name>")
@operation("Delete a stored destination.", responses={204: "Deleted.", 404: _UNKNOWN, 409: _CONFLICT})
def delete_destination(name: str):
    catalog.delete(db(), g.project, name)
    db().commit()
    return Response(status=204)
