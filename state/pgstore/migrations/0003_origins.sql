-- The cluster and timeline a slot's positions belong to (state.Origin), as
-- Store.SetOrigin recorded it. A state from before this migration has no
-- row; walhook records one at its next start.
CREATE TABLE walhook.origins (
    slot     text PRIMARY KEY,
    origin   bytea NOT NULL,
    updated  timestamptz NOT NULL DEFAULT now()
);
