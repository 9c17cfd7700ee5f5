"""API key checks (SPEC §5): keys are stored hashed and scoped to one project."""
from __future__ import annotations

import hmac
from enum import Enum

from sqlmodel import Session

from gateway.storage import project_store
from gateway.config.file import GatewayConfig, ProjectConfig, hash_api_key


class KeyCheck(Enum):
    VALID = "valid"
    UNKNOWN = "unknown"  # no project has this key: 401
    OTHER_PROJECT = "other_project"  # a real key, for another project: 403


def check_key(session: Session, config: GatewayConfig, project: ProjectConfig | None, key: str) -> KeyCheck:
    """Look the key's hash up among the config's and the database's keys (`project` None: the
    URL names no project, so a real key can only be another project's).

    Only hashes are compared, with `hmac.compare_digest`, so neither the key nor its timing leaks.
    """
    digest = hash_api_key(key)
    if project is not None and project.accepts_key_hash(digest):
        return KeyCheck.VALID
    stored = project_store.api_key_by_hash(session, digest)
    if stored is not None and hmac.compare_digest(stored.key_sha256, digest):
        return KeyCheck.VALID if project is not None and stored.project_key == project.key else KeyCheck.OTHER_PROJECT
    if any(other.accepts_key_hash(digest) for other in config.projects):
        return KeyCheck.OTHER_PROJECT
    return KeyCheck.UNKNOWN
