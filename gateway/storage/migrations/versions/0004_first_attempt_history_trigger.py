"""A new call's first history entry written by the database, in the statement that stores the call
(issue 10)

Every new call is stored with its first handoff attempt, and that attempt is the first entry of
its history. Written by the INSERT's own trigger, the two rows are one statement instead of two:
on SQLite one step fewer inside the writer turn, where each step hands the GIL to another thread
and waits to get it back (docs/performance.md); on PostgreSQL one round trip fewer.

The trigger fires for a conversation inserted with its first attempt begun (`attempts` 1,
`handoff_initiated`), which only a new call's INSERT does (gateway/voice/call_records.py); an
INSERT that conflicts (a known CallSid) inserts nothing and fires nothing. Its entry is the one
`handoff.initiate` writes: the destination, the dedupe key `attempt:1`, the call's start time.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FIRED_BY = "NEW.attempts = 1 AND NEW.state = 'handoff_initiated'"
_ENTRY = (
    "INSERT INTO handoff_events (conversation_id, state, destination, dedupe_key, at) "
    "VALUES (NEW.id, NEW.state, NEW.destination, 'attempt:1', NEW.started_at);"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION conversations_first_attempt() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {_ENTRY} RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER conversations_first_attempt AFTER INSERT ON conversations "
            f"FOR EACH ROW WHEN ({_FIRED_BY}) EXECUTE FUNCTION conversations_first_attempt()"
        )
    else:
        op.execute(
            "CREATE TRIGGER conversations_first_attempt AFTER INSERT ON conversations "
            f"FOR EACH ROW WHEN {_FIRED_BY} BEGIN {_ENTRY} END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER conversations_first_attempt ON conversations")
        op.execute("DROP FUNCTION conversations_first_attempt()")
    else:
        op.execute("DROP TRIGGER conversations_first_attempt")
