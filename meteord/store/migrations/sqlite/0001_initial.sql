-- The whole schema of meteord 0.1 for SQLite. Times are integer ms since the epoch (UTC),
-- numbers 64-bit floats, public ids 32-hex text, booleans 0/1.

CREATE TABLE camera_status (
    id INTEGER PRIMARY KEY,
    status_id TEXT NOT NULL UNIQUE,
    camera_id TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    lens TEXT NOT NULL,
    sensor TEXT NOT NULL,
    inst_url TEXT,
    inst_name TEXT,
    software_version INTEGER NOT NULL,
    lat REAL NOT NULL,
    long REAL NOT NULL,
    gps INTEGER NOT NULL,
    location_error REAL NOT NULL,
    alt REAL NOT NULL,
    az REAL NOT NULL,
    orientation_error REAL NOT NULL,
    rot REAL NOT NULL,
    width REAL NOT NULL,
    regions TEXT NOT NULL,
    imported_by TEXT,
    imported_at INTEGER
);
CREATE INDEX camera_status_camera_valid_from ON camera_status (camera_id, valid_from);

CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    file_id TEXT NOT NULL UNIQUE,
    camera_id TEXT NOT NULL,
    status_id TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    file_name TEXT,
    semantic_type TEXT NOT NULL,
    file_time INTEGER NOT NULL,
    file_size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    sha256 TEXT,
    imported_by TEXT,
    imported_at INTEGER
);
CREATE INDEX files_camera_time ON files (camera_id, file_time, file_id);
CREATE INDEX files_time ON files (file_time, file_id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    camera_id TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    status_id TEXT NOT NULL,
    imported_by TEXT,
    imported_at INTEGER
);
CREATE INDEX events_camera_time ON events (camera_id, event_time, event_id);
CREATE INDEX events_time ON events (event_time, event_id);

CREATE TABLE event_files (
    event_pk INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    file_pk INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    PRIMARY KEY (event_pk, position)
);
CREATE INDEX event_files_file ON event_files (file_pk);

CREATE TABLE event_meta (
    event_pk INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    string_value TEXT,
    float_value REAL,
    date_value INTEGER,
    PRIMARY KEY (event_pk, position)
);
CREATE INDEX event_meta_float ON event_meta (key, float_value);
CREATE INDEX event_meta_date ON event_meta (key, date_value);
CREATE INDEX event_meta_string ON event_meta (key, string_value);
-- Answers "has this event a number or date meta item matching ..." (the test a search makes
-- for each event in its time window) from the index alone, without reading table rows.
CREATE INDEX event_meta_owner_values ON event_meta (event_pk, key, float_value, date_value);

CREATE TABLE file_meta (
    file_pk INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    string_value TEXT,
    float_value REAL,
    date_value INTEGER,
    PRIMARY KEY (file_pk, position)
);
CREATE INDEX file_meta_float ON file_meta (key, float_value);
CREATE INDEX file_meta_date ON file_meta (key, date_value);
CREATE INDEX file_meta_string ON file_meta (key, string_value);

CREATE TABLE high_water_marks (
    camera_id TEXT PRIMARY KEY,
    mark INTEGER NOT NULL
);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role_mask INTEGER NOT NULL
);

CREATE TABLE export_configs (
    id INTEGER PRIMARY KEY,
    config_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    target_url TEXT NOT NULL,
    user_id TEXT NOT NULL,
    password TEXT NOT NULL,
    search TEXT NOT NULL,
    config_name TEXT NOT NULL,
    config_description TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    windows TEXT,
    max_bytes_per_second INTEGER,
    priority INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    deferred_until INTEGER,
    disabled_reason TEXT,
    last_success INTEGER,
    last_error TEXT,
    bytes_sent INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE export_tasks (
    id INTEGER PRIMARY KEY,
    config_pk INTEGER NOT NULL REFERENCES export_configs (id) ON DELETE CASCADE,
    entity_kind TEXT NOT NULL,
    entity_pk INTEGER NOT NULL,
    state TEXT NOT NULL,
    due_time INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_until INTEGER,
    created INTEGER NOT NULL,
    UNIQUE (config_pk, entity_kind, entity_pk)
);
CREATE INDEX export_tasks_state_due ON export_tasks (state, due_time);
CREATE INDEX export_tasks_entity ON export_tasks (entity_kind, entity_pk);

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    address TEXT NOT NULL,
    http_port INTEGER NOT NULL,
    scheme TEXT NOT NULL,
    version TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    interval REAL NOT NULL,
    status TEXT NOT NULL
);

CREATE TABLE script_runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    started INTEGER NOT NULL,
    ended INTEGER,
    stdout BLOB NOT NULL,
    stderr BLOB NOT NULL
);
