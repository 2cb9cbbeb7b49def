-- Paused sinks: one row per sink while it is paused (state.AppendPause).
CREATE TABLE walhook.pauses (
    slot     text NOT NULL,
    sink     text NOT NULL,
    record   bytea NOT NULL,
    updated  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, sink)
);
