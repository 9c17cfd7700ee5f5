"""Handoff destinations under /v1/{account_id}/{project_id}/handoff_destinations (SPEC §5)."""
from __future__ import annotations

from flask import Response, g, jsonify

from gateway import catalog
from gateway.catalog import CatalogError, Entry
from gateway.web import db
from gateway.web.api import bp, json_body
from gateway.web.errors import ApiError, error_response


@bp.errorhandler(CatalogError)
def _catalog_error(error: CatalogError):
    return error_response(error.status, error.code, error.message)


def destination_json(entry: Entry) -> dict:
    return {**entry.destination.model_dump(mode="json"), "source": entry.source}


def _entry_or_404(name: str) -> Entry:
    entry = catalog.find(db(), g.project, name)
    if entry is None:
        raise ApiError(404, "destination_not_found", f"No destination named {name!r} in this project.")
    return entry


@bp.get("/handoff_destinations")
def list_destinations():
    return jsonify({"items": [destination_json(e) for e in catalog.list_destinations(db(), g.project)]})


@bp.post("/handoff_destinations")
def create_destination():
    destination = catalog.create(db(), g.project, json_body())
    return jsonify(destination_json(Entry(destination, "database"))), 201


@bp.get("/handoff_destinations/<name>")
def get_destination(name: str):
    return jsonify(destination_json(_entry_or_404(name)))


@bp.patch("/handoff_destinations/<name>")
def update_destination(name: str):
    destination = catalog.update(db(), g.project, name, json_body())
    return jsonify(destination_json(Entry(destination, "database")))


@bp.delete("/handoff_destinations/<name>")
def delete_destination(name: str):
    catalog.delete(db(), g.project, name)
    return Response(status=204)
