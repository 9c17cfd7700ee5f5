-- The schema `init_db` (create_all) made on sqlite in the gateway's first release (commit ea227b0),
-- voice only: no SMS or chat tables yet. tests/test_migrations.py adopts a database made from it.

CREATE TABLE api_keys (
	id INTEGER NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	key_sha256 VARCHAR(64) NOT NULL,
	label VARCHAR(100),
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (key_sha256)
);

CREATE INDEX ix_api_keys_project_key ON api_keys (project_key);

CREATE TABLE conversations (
	id VARCHAR(36) NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	channel VARCHAR(10) NOT NULL,
	call_sid VARCHAR(64),
	shared_id VARCHAR(200),
	from_number VARCHAR(64),
	to_number VARCHAR(64),
	state VARCHAR(64),
	topic VARCHAR(64),
	destination VARCHAR(100),
	reason VARCHAR(200),
	utterance VARCHAR(1000),
	data JSON NOT NULL,
	attempts INTEGER NOT NULL,
	call_status VARCHAR(20),
	status_sequence INTEGER,
	duration_seconds INTEGER,
	started_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	ended_at DATETIME,
	PRIMARY KEY (id),
	UNIQUE (call_sid)
);

CREATE INDEX ix_conversations_from_number ON conversations (from_number);

CREATE INDEX ix_conversations_project_key ON conversations (project_key);

CREATE INDEX ix_conversations_shared_id ON conversations (shared_id);

CREATE INDEX ix_conversations_started_at ON conversations (started_at);

CREATE INDEX ix_conversations_state ON conversations (state);

CREATE INDEX ix_conversations_to_number ON conversations (to_number);

CREATE INDEX ix_conversations_topic ON conversations (topic);

CREATE TABLE destinations (
	id INTEGER NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	name VARCHAR(100) NOT NULL,
	body JSON NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (project_key, name)
);

CREATE INDEX ix_destinations_project_key ON destinations (project_key);

CREATE TABLE handoff_events (
	id INTEGER NOT NULL,
	conversation_id VARCHAR(36) NOT NULL,
	state VARCHAR(64) NOT NULL,
	destination VARCHAR(100),
	detail VARCHAR(500),
	dedupe_key VARCHAR(200),
	at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (conversation_id, dedupe_key),
	FOREIGN KEY(conversation_id) REFERENCES conversations (id)
);

CREATE INDEX ix_handoff_events_conversation_id ON handoff_events (conversation_id);
