-- The schema `init_db` (create_all, then every index) made on postgresql before the gateway had
-- migrations (commit 9832ad9). tests/test_migrations.py adopts a database made from it.

CREATE TABLE api_keys (
	id SERIAL NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	key_sha256 VARCHAR(64) NOT NULL,
	label VARCHAR(100),
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
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
	started_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	ended_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	UNIQUE (call_sid)
);

CREATE INDEX ix_conversations_caller ON conversations (project_key, from_number, started_at);

CREATE INDEX ix_conversations_newest ON conversations (project_key, started_at, id);

CREATE INDEX ix_conversations_shared_lookup ON conversations (project_key, shared_id, started_at, id);

CREATE TABLE destinations (
	id SERIAL NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	name VARCHAR(100) NOT NULL,
	body JSON NOT NULL,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (project_key, name)
);

CREATE TABLE sms_opt_outs (
	id SERIAL NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	number VARCHAR(64) NOT NULL,
	keyword VARCHAR(20) NOT NULL,
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (project_key, number)
);

CREATE TABLE sms_status_events (
	id SERIAL NOT NULL,
	message_sid VARCHAR(64) NOT NULL,
	status VARCHAR(20) NOT NULL,
	error_code INTEGER,
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_sms_status_events_message_sid ON sms_status_events (message_sid);

CREATE TABLE chat_messages (
	id SERIAL NOT NULL,
	conversation_id VARCHAR(36) NOT NULL,
	role VARCHAR(20) NOT NULL,
	text TEXT NOT NULL,
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(conversation_id) REFERENCES conversations (id)
);

CREATE INDEX ix_chat_messages_conversation_id ON chat_messages (conversation_id);

CREATE TABLE handoff_events (
	id SERIAL NOT NULL,
	conversation_id VARCHAR(36) NOT NULL,
	state VARCHAR(64) NOT NULL,
	destination VARCHAR(100),
	detail VARCHAR(500),
	dedupe_key VARCHAR(200),
	at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (conversation_id, dedupe_key),
	FOREIGN KEY(conversation_id) REFERENCES conversations (id)
);

CREATE TABLE sms_messages (
	id SERIAL NOT NULL,
	sid VARCHAR(64) NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	conversation_id VARCHAR(36),
	direction VARCHAR(10) NOT NULL,
	from_number VARCHAR(64) NOT NULL,
	to_number VARCHAR(64) NOT NULL,
	body TEXT NOT NULL,
	status VARCHAR(20) NOT NULL,
	error_code INTEGER,
	created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (sid),
	FOREIGN KEY(conversation_id) REFERENCES conversations (id)
);

CREATE INDEX ix_sms_messages_conversation_id ON sms_messages (conversation_id);

CREATE INDEX ix_sms_messages_created_at ON sms_messages (created_at);

CREATE INDEX ix_sms_messages_project_key ON sms_messages (project_key);

CREATE TABLE sms_threads (
	id SERIAL NOT NULL,
	project_key VARCHAR(200) NOT NULL,
	customer_number VARCHAR(64) NOT NULL,
	conversation_id VARCHAR(36) NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (project_key, customer_number),
	FOREIGN KEY(conversation_id) REFERENCES conversations (id)
);

-- Left by releases before 9832ad9 on databases init_db kept using since:
CREATE INDEX ix_destinations_project_key ON destinations (project_key);

CREATE INDEX ix_sms_opt_outs_project_key ON sms_opt_outs (project_key);
