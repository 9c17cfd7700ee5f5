"""Check every /v1 response the suite sees against /openapi.json: documented status, valid body.

And every JSON response of any path parses with a strict parser (no NaN or Infinity).
"""
from __future__ import annotations

import re

from flask import request
from openapi_schema_validator import OAS31Validator

from gateway.infra import strict_json

#: (method, path template, status) of every response checked, across the whole run.
CHECKED: set[tuple[str, str, str]] = set()


def _template(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


class Conformance:
    """Installed on a test app: records problems instead of raising inside Flask."""

    def __init__(self) -> None:
        self.document: dict = {"paths": {}, "components": {}}
        self.problems: list[str] = []

    def load(self, document: dict) -> None:
        """The app's own served document (fetched after this hook is installed, as Flask requires)."""
        self.document = document

    def check(self, response):
        if response.is_json and not response.is_streamed:
            try:
                strict_json.loads(response.get_data())
            except ValueError as error:
                self.problems.append(f"{request.method} {request.path}: not strict JSON ({error})")
        if not request.path.startswith("/v1/") or request.url_rule is None:
            return response
        path = _template(request.url_rule.rule)
        method = request.method.lower()
        status = str(response.status_code)
        operation = self.document["paths"].get(path, {}).get(method)
        where = f"{request.method} {path} -> {status}"
        if operation is None:
            self.problems.append(f"{where}: operation not documented")
            return response
        documented = operation["responses"].get(status)
        if documented is None:
            self.problems.append(f"{where}: status not documented")
            return response
        CHECKED.add((method, path, status))
        schema = documented.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            # Local $refs resolve against the schema's root, so the components travel with it.
            validator = OAS31Validator({**schema, "components": self.document["components"]})
            errors = [error.message for error in validator.iter_errors(response.get_json())]
            if errors:
                self.problems.append(f"{where}: body does not match: {errors[0]}")
        return response
