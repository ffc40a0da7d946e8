-- Configs (the head of each) and their immutable revisions.
CREATE TABLE IF NOT EXISTS configs (
    id         UUID PRIMARY KEY,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    record     JSONB NOT NULL,
    UNIQUE (namespace, name)
);

CREATE TABLE IF NOT EXISTS revisions (
    config_id  UUID NOT NULL,
    version    BIGINT NOT NULL,
    revision   JSONB NOT NULL,
    PRIMARY KEY (config_id, version)
);
