-- The audit log: who did what, when, with what result (docs/security.md).
CREATE TABLE IF NOT EXISTS audit (
    id         UUID PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    subject    TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    entry      JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at DESC);
CREATE INDEX IF NOT EXISTS audit_namespace_at ON audit (namespace, at DESC);
