"""Baseline: the schema the gateway made with create_all before it had migrations.

A database made then is adopted by running it too (gateway/storage/schema.py): every table and
index is made only if it is missing, so one made by any release before migrations (the first one
had no SMS or chat tables) ends with what a new install gets, its rows kept.

Revision ID: 0001
Revises:
Create Date: 2026-12-02 15:14:01
"""
from alembic import op
import sqlalchemy as sa

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_key', sa.String(length=200), nullable=False),
    sa.Column('key_sha256', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_sha256'),
    if_not_exists=True,
    )
    op.create_index('ix_api_keys_project_key', 'api_keys', ['project_key'], if_not_exists=True)

    op.create_table('conversations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('project_key', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=True),
    sa.Column('shared_id', sa.String(length=200), nullable=True),
    sa.Column('from_number', sa.String(length=64), nullable=True),
    sa.Column('to_number', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=64), nullable=True),
    sa.Column('topic', sa.String(length=64), nullable=True),
    sa.Column('destination', sa.String(length=100), nullable=True),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('utterance', sa.String(length=1000), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('call_status', sa.String(length=20), nullable=True),
    sa.Column('status_sequence', sa.Integer(), nullable=True),
    sa.Column('duration_seconds', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('call_sid'),
    if_not_exists=True,
    )
    op.create_index('ix_conversations_caller', 'conversations', ['project_key', 'from_number', 'started_at'], if_not_exists=True)
    op.create_index('ix_conversations_newest', 'conversations', ['project_key', 'started_at', 'id'], if_not_exists=True)
    op.create_index('ix_conversations_shared_lookup', 'conversations', ['project_key', 'shared_id', 'started_at', 'id'], if_not_exists=True)

    op.create_table('destinations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_key', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_key', 'name'),
    if_not_exists=True,
    )
    op.create_table('sms_opt_outs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_key', sa.String(length=200), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('keyword', sa.String(length=20), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_key', 'number'),
    if_not_exists=True,
    )
    op.create_table('sms_status_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('message_sid', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    if_not_exists=True,
    )
    op.create_index('ix_sms_status_events_message_sid', 'sms_status_events', ['message_sid'], if_not_exists=True)

    op.create_table('chat_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.String(length=36), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    if_not_exists=True,
    )
    op.create_index('ix_chat_messages_conversation_id', 'chat_messages', ['conversation_id'], if_not_exists=True)

    op.create_table('handoff_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.String(length=36), nullable=False),
    sa.Column('state', sa.String(length=64), nullable=False),
    sa.Column('destination', sa.String(length=100), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.Column('dedupe_key', sa.String(length=200), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('conversation_id', 'dedupe_key'),
    if_not_exists=True,
    )
    op.create_table('sms_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('project_key', sa.String(length=200), nullable=False),
    sa.Column('conversation_id', sa.String(length=36), nullable=True),
    sa.Column('direction', sa.String(length=10), nullable=False),
    sa.Column('from_number', sa.String(length=64), nullable=False),
    sa.Column('to_number', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sid'),
    if_not_exists=True,
    )
    op.create_index('ix_sms_messages_conversation_id', 'sms_messages', ['conversation_id'], if_not_exists=True)
    op.create_index('ix_sms_messages_created_at', 'sms_messages', ['created_at'], if_not_exists=True)
    op.create_index('ix_sms_messages_project_key', 'sms_messages', ['project_key'], if_not_exists=True)

    op.create_table('sms_threads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_key', sa.String(length=200), nullable=False),
    sa.Column('customer_number', sa.String(length=64), nullable=False),
    sa.Column('conversation_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_key', 'customer_number'),
    if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table('sms_threads')
    op.drop_index('ix_sms_messages_project_key', table_name='sms_messages')
    op.drop_index('ix_sms_messages_created_at', table_name='sms_messages')
    op.drop_index('ix_sms_messages_conversation_id', table_name='sms_messages')

    op.drop_table('sms_messages')
    op.drop_table('handoff_events')
    op.drop_index('ix_chat_messages_conversation_id', table_name='chat_messages')

    op.drop_table('chat_messages')
    op.drop_index('ix_sms_status_events_message_sid', table_name='sms_status_events')

    op.drop_table('sms_status_events')
    op.drop_table('sms_opt_outs')
    op.drop_table('destinations')
    op.drop_index('ix_conversations_shared_lookup', table_name='conversations')
    op.drop_index('ix_conversations_newest', table_name='conversations')
    op.drop_index('ix_conversations_caller', table_name='conversations')

    op.drop_table('conversations')
    op.drop_index('ix_api_keys_project_key', table_name='api_keys')

    op.drop_table('api_keys')
