"""Alembic's entry point: run the migrations on the connection gateway/storage/schema.py hands over.

There is no alembic.ini: gateway/storage/schema.py builds the configuration, opens the connection and
takes the lock that keeps two instances from migrating at once (docs/migrations.md).
"""
from alembic import context
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from gateway.storage import models

assert models  # the tables register themselves on SQLModel.metadata on import


def render_item(kind, value, _autogen_context):
    """Write SQLModel's string type as plain sa.String, so revisions import nothing of SQLModel."""
    if kind == "type" and isinstance(value, AutoString):
        return f"sa.String(length={value.length})" if value.length else "sa.String()"
    return False


context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=SQLModel.metadata,
    render_item=render_item,
    render_as_batch=True,  # SQLite alters a table by copying it; batch mode writes that for us
)
with context.begin_transaction():
    context.run_migrations()
