-- The whole schema of meteord 0.1 for PostgreSQL. Times are integer ms since the epoch (UTC),
-- numbers 64-bit floats, public ids 32-hex text, booleans BOOLEAN.

CREATE TABLE camera_status (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status_id TEXT NOT NULL UNIQUE,
    camera_id TEXT NOT NULL,
    valid_from BIGINT NOT NULL,
    lens TEXT NOT NULL,
    sensor TEXT NOT NULL,
    inst_url TEXT,
    inst_name TEXT,
    software_version BIGINT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    long DOUBLE PRECISION NOT NULL,
    gps BOOLEAN NOT NULL,
    location_error DOUBLE PRECISION NOT NULL,
    alt DOUBLE PRECISION NOT NULL,
    az DOUBLE PRECISION NOT NULL,
    orientation_error DOUBLE PRECISION NOT NULL,
    rot DOUBLE PRECISION NOT NULL,
    width DOUBLE PRECISION NOT NULL,
    regions TEXT NOT NULL,
    imported_by TEXT,
    imported_at BIGINT
);
CREATE INDEX camera_status_camera_valid_from ON camera_status (camera_id, valid_from);

CREATE TABLE files (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id TEXT NOT NULL UNIQUE,
    camera_id TEXT NOT NULL,
    status_id TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    file_name TEXT,
    semantic_type TEXT NOT NULL,
    file_time BIGINT NOT NULL,
    file_size BIGINT NOT NULL,
    md5 TEXT NOT NULL,
    sha256 TEXT,
    imported_by TEXT,
    imported_at BIGINT
);
CREATE INDEX files_camera_time ON files (camera_id, file_time, file_id);
CREATE INDEX files_time ON files (file_time, file_id);

CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    camera_id TEXT NOT NULL,
    event_time BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    status_id TEXT NOT NULL,
    imported_by TEXT,
    imported_at BIGINT
);
CREATE INDEX events_camera_time ON events (camera_id, event_time, event_id);
CREATE INDEX events_time ON events (event_time, event_id);

CREATE TABLE event_files (
    event_pk BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    file_pk BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    PRIMARY KEY (event_pk, position)
);
CREATE INDEX event_files_file ON event_files (file_pk);

CREATE TABLE event_meta (
    event_pk BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    string_value TEXT,
    float_value DOUBLE PRECISION,
    date_value BIGINT,
    PRIMARY KEY (event_pk, position)
);
CREATE INDEX event_meta_float ON event_meta (key, float_value);
CREATE INDEX event_meta_date ON event_meta (key, date_value);
CREATE INDEX event_meta_string ON event_meta (key, string_value);
-- Answers "has this event a number or date meta item matching ..." (the test a search makes
-- for each event in its time window) from the index alone, without reading table rows.
CREATE INDEX event_meta_owner_values ON event_meta (event_pk, key, float_value, date_value);

CREATE TABLE file_meta (
    file_pk BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    string_value TEXT,
    float_value DOUBLE PRECISION,
    date_value BIGINT,
    PRIMARY KEY (file_pk, position)
);
CREATE INDEX file_meta_float ON file_meta (key, float_value);
CREATE INDEX file_meta_date ON file_meta (key, date_value);
CREATE INDEX file_meta_string ON file_meta (key, string_value);

CREATE TABLE high_water_marks (
    camera_id TEXT PRIMARY KEY,
    mark BIGINT NOT NULL
);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role_mask BIGINT NOT NULL
);

CREATE TABLE export_configs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    config_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    target_url TEXT NOT NULL,
    user_id TEXT NOT NULL,
    password TEXT NOT NULL,
    search TEXT NOT NULL,
    config_name TEXT NOT NULL,
    config_description TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    windows TEXT,
    max_bytes_per_second BIGINT,
    priority BIGINT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    deferred_until BIGINT,
    disabled_reason TEXT,
    last_success BIGINT,
    last_error TEXT,
    bytes_sent BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE export_tasks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    config_pk BIGINT NOT NULL REFERENCES export_configs (id) ON DELETE CASCADE,
    entity_kind TEXT NOT NULL,
    entity_pk BIGINT NOT NULL,
    state TEXT NOT NULL,
    due_time BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_until BIGINT,
    created BIGINT NOT NULL,
    UNIQUE (config_pk, entity_kind, entity_pk)
);
CREATE INDEX export_tasks_state_due ON export_tasks (state, due_time);
CREATE INDEX export_tasks_entity ON export_tasks (entity_kind, entity_pk);

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    address TEXT NOT NULL,
    http_port BIGINT NOT NULL,
    scheme TEXT NOT NULL,
    version TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    interval DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL
);

CREATE TABLE script_runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code BIGINT,
    started BIGINT NOT NULL,
    ended BIGINT,
    stdout BYTEA NOT NULL,
    stderr BYTEA NOT NULL
);
