"""Destination names unique without regard to case (name_key); console sign-in failures counted
in the database, across workers and instances (issue 12)

Revision ID: 0003
Revises: 0002
"""
import unicodedata

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: The name_key column's length (gateway.storage.models.StoredDestination.name_key).
NAME_KEY_LENGTH = 300


def _name_key(name: str) -> str:
    """gateway.config.destinations.name_key as of this revision: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).strip().casefold())


def _name_keys_without_clashes(connection, destinations) -> dict[int, str]:
    """Each stored destination's key by its id; stop before changing anything if a project has
    two destinations this revision would make one, or a name whose key outgrows its column.

    Renaming one by itself would send a route that names it to the other; the operator knows
    which is which. The error names them, and the upgrade's transaction leaves the database as it was.
    The previous release took any 1-100 characters before NFKC, which can make a key over
    NAME_KEY_LENGTH (PostgreSQL would stop the upgrade on it with a traceback); this release's
    own names (NFKC first, then at most 100) never do.
    """
    rows = connection.execute(
        sa.select(destinations.c.id, destinations.c.project_key, destinations.c.name).order_by(destinations.c.id)
    ).all()
    keys = {row_id: _name_key(name) for row_id, _, name in rows}
    too_long = [
        f"{project_key}: {name!r} (id {row_id})"
        for row_id, project_key, name in rows
        if len(keys[row_id]) > NAME_KEY_LENGTH
    ]
    if too_long:
        raise CommandError(
            f"destination names get a key (NFKC, case-folded) of at most {NAME_KEY_LENGTH} characters, but these "
            "names' keys are longer: " + "; ".join(too_long) + ". Rename each to a shorter name with the release "
            "you run now (the Destinations API or the console), then run `gateway db upgrade` again. Nothing was changed."
        )
    by_key: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for row_id, project_key, name in rows:
        by_key.setdefault((project_key, keys[row_id]), []).append((row_id, name))
    clashes = [
        f"{project_key}: " + ", ".join(f"{name!r} (id {row_id})" for row_id, name in named)
        for (project_key, _), named in by_key.items()
        if len(named) > 1
    ]
    if clashes:
        raise CommandError(
            "destination names become unique without regard to case, but these differ only in case: "
            + "; ".join(clashes)
            + ". Rename or delete all but one of each with the release you run now (the Destinations "
            "API or the console), then run `gateway db upgrade` again. Nothing was changed."
        )
    return keys


def upgrade() -> None:
    destinations = sa.table(
        "destinations",
        sa.column("id", sa.Integer),
        sa.column("project_key", sa.String),
        sa.column("name", sa.String),
        sa.column("name_key", sa.String),
    )
    connection = op.get_bind()
    keys = _name_keys_without_clashes(connection, destinations)

    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sign_in_failures", schema=None) as batch_op:
        batch_op.create_index("ix_sign_in_failures_address", ["address", "at"], unique=False)
        batch_op.create_index("ix_sign_in_failures_at", ["at"], unique=False)

    # Existing destinations get their key from their name before the column may not be empty.
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=NAME_KEY_LENGTH), nullable=True))
    for row_id, key in keys.items():
        connection.execute(destinations.update().where(destinations.c.id == row_id).values(name_key=key))
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=NAME_KEY_LENGTH), nullable=False)
        batch_op.create_unique_constraint("uq_destinations_project_name_key", ["project_key", "name_key"])


def downgrade() -> None:
    with op.batch_alter_table("destinations", schema=None) as batch_op:
        batch_op.drop_constraint("uq_destinations_project_name_key", type_="unique")
        batch_op.drop_column("name_key")
    with op.batch_alter_table("sign_in_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_sign_in_failures_at")
        batch_op.drop_index("ix_sign_in_failures_address")
    op.drop_table("sign_in_failures")
