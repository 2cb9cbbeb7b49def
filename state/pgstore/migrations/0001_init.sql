-- walhook state, keyed by slot (source.slot): instances relaying different
-- slots share the schema, each reading and writing only its slot's rows.

-- The slot the state belongs to, as Store.SetSlot recorded it.
CREATE TABLE walhook.slots (
    slot       text PRIMARY KEY,
    used_slot  text NOT NULL,
    updated    timestamptz NOT NULL DEFAULT now()
);

-- Each sink's cursor record (state.AppendCursor).
CREATE TABLE walhook.cursors (
    slot     text NOT NULL,
    sink     text NOT NULL,
    cursor   bytea NOT NULL,
    updated  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot, sink)
);

-- Each sink's backlog: position (state.AppendPosition, so byte order is
-- position order) → entry record (state.AppendEntry); size is the record's
-- length, what backlog.max_size bounds.
CREATE TABLE walhook.backlog (
    slot   text NOT NULL,
    sink   text NOT NULL,
    pos    bytea NOT NULL,
    size   integer NOT NULL,
    entry  bytea NOT NULL,
    PRIMARY KEY (slot, sink, pos)
);

-- The last dead-letter number given out per sink: never reused.
CREATE TABLE walhook.dead_letter_ids (
    slot  text NOT NULL,
    sink  text NOT NULL,
    last  bigint NOT NULL,
    PRIMARY KEY (slot, sink)
);

-- Dead letters: record is state.AppendDeadLetter's, head_len the length
-- of its header (what List reads).
CREATE TABLE walhook.dead_letters (
    slot      text NOT NULL,
    sink      text NOT NULL,
    id        bigint NOT NULL,
    head_len  integer NOT NULL,
    record    bytea NOT NULL,
    PRIMARY KEY (slot, sink, id)
);

-- The active instance of each slot, written by it when it takes the lease
-- (package lease); backend_pid is its lock session's, so a reader can tell
-- a live holder (in pg_locks) from a stale row.
CREATE TABLE walhook.leaders (
    slot         text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    backend_pid  integer NOT NULL,
    since        timestamptz NOT NULL DEFAULT now()
);
