-- Schema v1: devices and enrollment, releases and their bundles, rings and
-- pauses, per-device rollout state with its per-ring aggregates, reports and
-- the audit log. Times are unix microseconds (UTC) in BIGINT columns so both
-- dialects store, compare and return them the same way. INTEGER PRIMARY KEY
-- AUTOINCREMENT: SQLite never hands an id out again, even after the highest
-- row is deleted.

CREATE TABLE rings (
	name           TEXT PRIMARY KEY,
	position       INTEGER NOT NULL UNIQUE,
	percent        INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),
	pinned_only    BOOLEAN NOT NULL DEFAULT FALSE,
	deferral_s     BIGINT NOT NULL DEFAULT 0 CHECK (deferral_s >= 0),
	deadline_s     BIGINT NOT NULL DEFAULT 0 CHECK (deadline_s >= 0),
	grace_s        BIGINT NOT NULL DEFAULT 0 CHECK (grace_s >= 0)
);

-- Autopatch's defaults: deferral 0/1/6/9 days, deadline 0/2/2/5, grace 0/2/2/2.
INSERT INTO rings (name, position, percent, pinned_only, deferral_s, deadline_s, grace_s) VALUES
	('Test',  0,  0, TRUE,  0,        0,        0),
	('First', 1,  1, FALSE, 86400,    172800,   172800),
	('Fast',  2,  9, FALSE, 518400,   172800,   172800),
	('Broad', 3, 90, FALSE, 777600,   432000,   172800),
	('Last',  4,  0, TRUE,  777600,   432000,   172800);

CREATE TABLE enrollment_tokens (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	token_hash  BLOB NOT NULL UNIQUE,
	created_by  TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL,
	max_uses    INTEGER NOT NULL CHECK (max_uses > 0),
	uses        INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
	ring        TEXT REFERENCES rings(name) ON UPDATE CASCADE,
	labels      TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE devices (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	public_key      BLOB NOT NULL UNIQUE,
	hostname        TEXT NOT NULL DEFAULT '',
	labels          TEXT NOT NULL DEFAULT '{}',
	ring_pin        TEXT REFERENCES rings(name) ON UPDATE CASCADE,
	state           TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'revoked')),
	token_id        BIGINT REFERENCES enrollment_tokens(id),
	enrolled_at     BIGINT NOT NULL,
	last_seen       BIGINT,
	inventory_hash  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE bundles (
	sha256      TEXT PRIMARY KEY CHECK (length(sha256) = 64),
	size        BIGINT NOT NULL CHECK (size >= 0),
	data        BLOB,
	path        TEXT,
	created_at  BIGINT NOT NULL,
	CHECK ((data IS NULL) <> (path IS NULL))
);

CREATE TABLE releases (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	name          TEXT NOT NULL UNIQUE,
	kind          TEXT NOT NULL CHECK (kind IN ('hotpatch', 'baseline')),
	severity      TEXT NOT NULL CHECK (severity IN ('low', 'moderate', 'important', 'critical')),
	cves          TEXT NOT NULL DEFAULT '[]',
	notes         TEXT NOT NULL DEFAULT '',
	state         TEXT NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'published', 'paused', 'rolled-back')),
	created_by    TEXT NOT NULL,
	created_at    BIGINT NOT NULL,
	published_at  BIGINT,
	expedited_at  BIGINT
);

-- One bundle per build-id in a release.
CREATE TABLE release_bundles (
	release_id     BIGINT NOT NULL REFERENCES releases(id),
	build_id       TEXT NOT NULL,
	bundle_sha256  TEXT NOT NULL REFERENCES bundles(sha256),
	PRIMARY KEY (release_id, build_id)
);

-- A pause stops a release (ring NULL), a ring for every release (release_id
-- NULL), or one release in one ring; resumed_at ends it, the row stays.
CREATE TABLE pauses (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	release_id  BIGINT REFERENCES releases(id),
	ring        TEXT REFERENCES rings(name) ON UPDATE CASCADE,
	actor       TEXT NOT NULL,
	reason      TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	resumed_by  TEXT,
	resumed_at  BIGINT,
	CHECK (release_id IS NOT NULL OR ring IS NOT NULL)
);
CREATE INDEX pauses_active ON pauses (release_id, ring) WHERE resumed_at IS NULL;

-- ring is the ring the device was counted in, so the aggregate it leaves is
-- the one it entered even if the device moved rings since.
CREATE TABLE device_release_state (
	device_id   BIGINT NOT NULL REFERENCES devices(id),
	release_id  BIGINT NOT NULL REFERENCES releases(id),
	ring        TEXT NOT NULL,
	state       TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT '',
	updated_at  BIGINT NOT NULL,
	PRIMARY KEY (device_id, release_id)
);
CREATE INDEX device_release_state_release ON device_release_state (release_id, ring, state);

CREATE TABLE release_ring_counts (
	release_id  BIGINT NOT NULL REFERENCES releases(id),
	ring        TEXT NOT NULL,
	state       TEXT NOT NULL,
	n           BIGINT NOT NULL CHECK (n >= 0),
	PRIMARY KEY (release_id, ring, state)
);

CREATE TABLE reports (
	device_id    BIGINT NOT NULL REFERENCES devices(id),
	seq          BIGINT NOT NULL,
	received_at  BIGINT NOT NULL,
	body         TEXT NOT NULL,
	PRIMARY KEY (device_id, seq)
);

CREATE TABLE audit_log (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	at           BIGINT NOT NULL,
	actor        TEXT NOT NULL,
	action       TEXT NOT NULL,
	target       TEXT NOT NULL,
	details      TEXT NOT NULL DEFAULT '{}',
	remote_addr  TEXT NOT NULL DEFAULT ''
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
	SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
	SELECT RAISE(ABORT, 'audit_log is append-only');
END;
