-- Host keys the `nova` CLI recorded under hostKeyPolicy AcceptNew (as ssh's known_hosts): the
-- first key a host presents is kept and every later connection must present it.
CREATE TABLE known_hosts (
    address     TEXT NOT NULL,
    port        INTEGER NOT NULL,
    host_key    TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (address, port)
);
