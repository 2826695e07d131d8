-- Schema v2: what the server needs to run a fleet: each device's inventory
-- (applicability), its last check-in state, a generation counter that
-- replicas watch to wake long-polls, admin tokens, and settings.

-- The modules a device's processes map, from its last inventory.
CREATE TABLE device_modules (
	device_id  BIGINT NOT NULL REFERENCES devices(id),
	build_id   TEXT NOT NULL,
	name       TEXT NOT NULL DEFAULT '',
	package    TEXT NOT NULL DEFAULT '',
	processes  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (device_id, build_id)
);
CREATE INDEX device_modules_build_id ON device_modules (build_id);
CREATE INDEX device_modules_name ON device_modules (name);

ALTER TABLE devices ADD COLUMN ready BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE devices ADD COLUMN readiness TEXT NOT NULL DEFAULT '[]';
ALTER TABLE devices ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN checkin_state TEXT NOT NULL DEFAULT '{}';
CREATE INDEX devices_last_seen ON devices (last_seen);

-- Check-in times of each device, recent ones only (the forecast's history).
CREATE TABLE device_checkins (
	device_id  BIGINT NOT NULL REFERENCES devices(id),
	at         BIGINT NOT NULL,
	PRIMARY KEY (device_id, at)
);

-- One row: bumped by every change that can alter some device's
-- assignments; every replica polls it to wake its long-polls.
CREATE TABLE fleet_generation (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	n   BIGINT NOT NULL
);
INSERT INTO fleet_generation (id, n) VALUES (1, 1);

CREATE TABLE admin_tokens (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	name         TEXT NOT NULL,
	role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
	token_hash   BLOB NOT NULL UNIQUE,
	created_by   TEXT NOT NULL,
	created_at   BIGINT NOT NULL,
	expires_at   BIGINT,
	revoked_at   BIGINT,
	last_used    BIGINT
);

-- Server-wide settings as JSON documents: halt thresholds, ring overrides.
CREATE TABLE settings (
	name        TEXT PRIMARY KEY,
	value       TEXT NOT NULL,
	updated_by  TEXT NOT NULL,
	updated_at  BIGINT NOT NULL
);

-- Per-release halt settings and whether an automatic halt also rolls back.
ALTER TABLE releases ADD COLUMN auto_rollback BOOLEAN NOT NULL DEFAULT FALSE;
