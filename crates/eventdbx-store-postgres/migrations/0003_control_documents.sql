-- 3: the control documents several servers share (tokens, tenants, schemas, plugins)
-- Control documents several servers share (docs/storage.md, "Several servers"): token signing
-- key and ledger, tenant placement, quotas and schemas, plugin definitions. A write raises the
-- revision in one statement conditioned on the revision it was prepared from.
CREATE TABLE control_documents (
    name            text COLLATE "C" PRIMARY KEY,
    body            bytea NOT NULL,
    revision        bigint NOT NULL
);
