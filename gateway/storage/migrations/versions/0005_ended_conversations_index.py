"""Conversations that ended lately, indexed for their end events

`conversation.ended` was looked for among conversations that *started* in the last day, so a
chat or SMS thread closed more than a day after it began never had its end event. The journal
now looks among those that *ended* in the last day, which needs this index. It is partial (only
rows with an end): a new call's INSERT, the webhook's hot path, writes nothing to it.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ENDED = sa.text("ended_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_conversations_ended", "conversations", ["project_key", "ended_at"],
        sqlite_where=_ENDED, postgresql_where=_ENDED,
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_ended", table_name="conversations")
