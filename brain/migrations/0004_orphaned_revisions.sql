-- A deletion now takes the config's history with it (in the same transaction). Revisions left
-- by deletions made before that are removed once, here: nothing reads them, and they would keep
-- the deleted configs' private keys.
DELETE FROM revisions r WHERE NOT EXISTS (SELECT 1 FROM configs c WHERE c.id = r.config_id);
