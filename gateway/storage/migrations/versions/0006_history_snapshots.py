"""Each history entry keeps the conversation's shared_id, data, reason and utterance of its moment

An event is published after its history entry is written (by the next feed read or worker
pass) and carries the `handoff_state` document of that moment (SPEC §5). The lifecycle fields
come from the history itself; these four were read from the conversation as it was at
publication, so a second handoff within that moment showed its reason, data and shared_id in
the first one's event too. Now each entry keeps them (`snapshot`, JSON), and the trigger that
writes a new call's first entry (migration 0004) keeps them as well, in the same statement.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_FIRED_BY = "NEW.attempts = 1 AND NEW.state = 'handoff_initiated'"
_COLUMNS = "conversation_id, state, destination, dedupe_key, at"
_VALUES = "NEW.id, NEW.state, NEW.destination, 'attempt:1', NEW.started_at"
_SNAPSHOT = {
    "postgresql": "json_build_object('shared_id', NEW.shared_id, 'data', NEW.data, 'reason', NEW.reason, 'utterance', NEW.utterance)",
    "sqlite": "json_object('shared_id', NEW.shared_id, 'data', json(NEW.data), 'reason', NEW.reason, 'utterance', NEW.utterance)",
}


def _entry(dialect: str, with_snapshot: bool) -> str:
    if not with_snapshot:
        return f"INSERT INTO handoff_events ({_COLUMNS}) VALUES ({_VALUES});"
    return f"INSERT INTO handoff_events ({_COLUMNS}, snapshot) VALUES ({_VALUES}, {_SNAPSHOT[dialect]});"


def _postgresql_trigger_function(with_snapshot: bool) -> None:
    """The trigger calls this function: replacing it replaces what the trigger writes."""
    op.execute(
        "CREATE OR REPLACE FUNCTION conversations_first_attempt() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {_entry('postgresql', with_snapshot)} RETURN NULL; END $$"
    )


def _sqlite_trigger(with_snapshot: bool) -> None:
    op.execute(
        "CREATE TRIGGER conversations_first_attempt AFTER INSERT ON conversations "
        f"FOR EACH ROW WHEN {_FIRED_BY} BEGIN {_entry('sqlite', with_snapshot)} END"
    )


def upgrade() -> None:
    op.add_column("handoff_events", sa.Column("snapshot", sa.JSON(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_trigger_function(with_snapshot=True)
    else:
        op.execute("DROP TRIGGER conversations_first_attempt")
        _sqlite_trigger(with_snapshot=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_trigger_function(with_snapshot=False)
        op.drop_column("handoff_events", "snapshot")
        return
    # SQLite drops a column by copying the table and renaming the copy, which trips over a
    # trigger that names the table: the trigger goes first and comes back after.
    op.execute("DROP TRIGGER conversations_first_attempt")
    with op.batch_alter_table("handoff_events") as table:
        table.drop_column("snapshot")
    _sqlite_trigger(with_snapshot=False)
