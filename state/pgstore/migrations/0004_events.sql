-- Operational events waiting to be sent to the events endpoint: seq
-- orders them and is never reused; record is state.AppendEvent's.
CREATE TABLE walhook.events (
    slot    text NOT NULL,
    seq     bigserial NOT NULL,
    record  bytea NOT NULL,
    PRIMARY KEY (slot, seq)
);
