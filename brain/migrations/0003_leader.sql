-- High availability: the leader lease (one row) and the brains that share this database.
CREATE TABLE IF NOT EXISTS flotilla_leader (
    id          INT PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    url         TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS flotilla_brains (
    id       TEXT PRIMARY KEY,
    url      TEXT NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL
);
