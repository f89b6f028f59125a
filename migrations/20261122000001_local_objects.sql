-- Objects applied with `nova apply` and no cluster: the spec as last applied and the status
-- Nova keeps for it (JSON text), so that `nova get` and the next apply see them.
CREATE TABLE local_objects (
    kind       TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    status     TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
