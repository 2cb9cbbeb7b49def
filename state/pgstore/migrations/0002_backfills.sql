-- Backfills and their progress, each saved whole (state.AppendBackfill).
CREATE TABLE walhook.backfills (
    slot     text NOT NULL,
    id       text NOT NULL,
    record   bytea NOT NULL,
    updated  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, id)
);
