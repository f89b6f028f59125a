-- Nova's state: what status cannot hold. Portable SQL: the same file runs on SQLite and
-- PostgreSQL. Times are RFC 3339 text in UTC, so they sort and compare as strings.

-- What Nova changed and why.
CREATE TABLE audit (
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX audit_object ON audit (kind, namespace, name, at);

-- Every revision a Platform or BlueGreenDeployment rolled out.
CREATE TABLE releases (
    kind             TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    revision         TEXT NOT NULL,
    image            TEXT NOT NULL,
    first_applied_at TEXT NOT NULL,
    last_applied_at  TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name, revision)
);

-- Backup artifacts (filled by the backup controller).
CREATE TABLE backup_catalog (
    namespace   TEXT NOT NULL,
    backup      TEXT NOT NULL,
    id          TEXT NOT NULL,
    taken_at    TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    hmac        TEXT,
    location    TEXT NOT NULL,
    verified_at TEXT,
    deleted_at  TEXT,
    PRIMARY KEY (namespace, backup, id)
);

-- Certificate issuance attempts (filled by the certificate controller).
CREATE TABLE cert_issuance (
    namespace   TEXT NOT NULL,
    certificate TEXT NOT NULL,
    at          TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    serial      TEXT,
    not_after   TEXT,
    message     TEXT NOT NULL
);
CREATE INDEX cert_issuance_object ON cert_issuance (namespace, certificate, at);

-- Training runs (filled by the training controller).
CREATE TABLE training_runs (
    namespace   TEXT NOT NULL,
    job         TEXT NOT NULL,
    run         BIGINT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    last_step   BIGINT,
    last_loss   DOUBLE PRECISION,
    PRIMARY KEY (namespace, job, run)
);

-- Latest facts gathered from each Host, as JSON.
CREATE TABLE host_facts (
    host        TEXT NOT NULL PRIMARY KEY,
    gathered_at TEXT NOT NULL,
    facts       TEXT NOT NULL
);
