package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/internal/webhooktest"
	"github.com/walhook/walhook/replication"
)

// failoverEnv is a primary, a streaming standby made from it after the
// slot, and a walhook configured with both hosts
// (target_session_attrs=read-write follows the primary).
type failoverEnv struct {
	primary, standby *pgtest.Server
	conn             *pgx.Conn // to the primary
	rcv              *webhooktest.Receiver
	cfg              string
}

const failoverSlot = "failover"

func startFailoverEnv(t *testing.T) *failoverEnv {
	t.Helper()
	e := &failoverEnv{primary: startServer(t, pgtest.Options{})}
	e.conn = connect(t, e.primary.DSN("postgres"))
	exec1(t, e.conn, `CREATE TABLE t (id int PRIMARY KEY, pad text)`)
	exec1(t, e.conn, `CREATE PUBLICATION `+failoverSlot+` FOR TABLE t WITH (publish_via_partition_root = true)`)
	exec1(t, e.conn, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, failoverSlot)
	// The copy of the slot on the standby stays where it was made: behind
	// everything walhook delivers from now on, as a slot copied by
	// Patroni or pg_failover_slots would lag.
	standby, err := e.primary.StartStandby()
	if err != nil {
		t.Fatal(err)
	}
	e.standby = standby
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("standby log:\n%s", standby.LogTail(40))
		}
		if err := standby.Close(); err != nil {
			t.Errorf("close the standby: %v", err)
		}
	})
	e.conn = connect(t, e.primary.DSN("postgres")) // the stop for the copy ended the first
	e.rcv = webhooktest.New(t, "")
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable&target_session_attrs=read-write",
		e.primary.Port(), standby.Port())
	dir := t.TempDir()
	yaml := fmt.Sprintf(`source:
  url: %q
  slot: %s
  publication: %s
  tables: [public.t]
  heartbeat: 200ms
  receive_timeout: 5s
state:
  path: %q
server:
  listen: ""
log:
  format: text
  level: debug
sinks:
  - name: s
    url: %q
    batch_wait: 5ms
    retry: {initial: 20ms, max: 200ms}
`, url, failoverSlot, failoverSlot, filepath.Join(dir, "walhook.state"), e.rcv.URL)
	e.cfg = filepath.Join(dir, "walhook.yaml")
	if err := os.WriteFile(e.cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// insert commits rows first..last, one transaction each.
func insert(t *testing.T, conn *pgx.Conn, first, last, pad int) {
	t.Helper()
	for id := first; id <= last; id++ {
		exec1(t, conn, `INSERT INTO t VALUES ($1, repeat('x', $2))`, id, pad)
	}
}

// idRange is first..last.
func idRange(first, last int) []int {
	var ids []int
	for id := first; id <= last; id++ {
		ids = append(ids, id)
	}
	return ids
}

// switchPoint reads where timeline 1 ended from the history of the
// promoted standby's timeline.
func switchPoint(t *testing.T, srv *pgtest.Server) pglogrepl.LSN {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, srv.ReplicationDSN("postgres"))
	sys, err := pglogrepl.IdentifySystem(ctx, conn.PgConn())
	if err != nil {
		t.Fatal(err)
	}
	if sys.Timeline < 2 {
		t.Fatalf("promoted standby on timeline %d, want 2 or more", sys.Timeline)
	}
	h, err := pglogrepl.TimelineHistory(ctx, conn.PgConn(), sys.Timeline)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := replication.ParseTimelineHistory(h.Content)
	if err != nil || len(hist) == 0 || hist[0].Timeline != 1 {
		t.Fatalf("history %q: got %v, %v, want timeline 1 first", h.Content, hist, err)
	}
	return hist[0].Switch
}

// TestFailoverBehindCursor: the primary dies after walhook delivered
// changes its standby never received; the promoted standby's copy of the
// slot is behind walhook's cursor, and the rows committed on the new
// timeline commit at positions below that cursor. walhook must stop with
// exit 1 naming the branch point and its cursor, not skip them (issue 18:
// before, it ran on and never delivered them).
func TestFailoverBehindCursor(t *testing.T) {
	t.Parallel()
	e := startFailoverEnv(t)
	d := startWalhook(t, "run", "--config", e.cfg)
	insert(t, e.conn, 1, 20, 10)
	waitIDs(t, e.rcv, "t", idRange(1, 20), 60*time.Second)

	// The standby stops receiving; walhook delivers 400 rows (about 0.5 MB
	// of WAL) that only the primary has, then the primary dies.
	if err := e.standby.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	insert(t, e.conn, 21, 420, 1000)
	delivered := waitIDs(t, e.rcv, "t", idRange(21, 420), 60*time.Second)
	var last pglogrepl.LSN
	for _, m := range e.rcv.Messages() {
		if lsn, err := pglogrepl.ParseLSN(m.Metadata.CommitLSN); err == nil {
			last = max(last, lsn)
		}
	}
	if err := e.primary.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if err := e.standby.Start(); err != nil {
		t.Fatal(err)
	}
	if err := e.standby.Promote(); err != nil {
		t.Fatal(err)
	}
	sw := switchPoint(t, e.standby)
	if sw >= last {
		t.Fatalf("timeline 1 ended at %s on the standby, above the last delivered commit %s: the test does not make the standby lag", sw, last)
	}
	// New rows on the new timeline, committing between the switch and
	// walhook's cursor.
	conn := connect(t, e.standby.DSN("postgres"))
	insert(t, conn, 1001, 1020, 10)
	if lsn := currentLSN(t, conn); lsn >= last {
		t.Fatalf("the new timeline's rows end at %s, above walhook's cursor %s: they would not be skipped", lsn, last)
	}

	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		delivered.update(t, e.rcv.Messages())
		n := 0
		for id := 1001; id <= 1020; id++ {
			n += min(delivered.count[id], 1)
		}
		t.Fatalf("walhook ran on after the failover, 60 s; it delivered %d of the 20 rows of the new timeline; output:\n%s", n, d.out.String())
	}
	code := d.cmd.ProcessState.ExitCode()
	out := d.out.String()
	if code != 1 {
		t.Errorf("walhook exited %d, want 1", code)
	}
	m := regexp.MustCompile(`branched off timeline 1 at (\S+), but walhook's cursor is at (\S+):`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("walhook's output does not name the branch point and the cursor:\n%s", out)
	}
	if m[1] != sw.String() {
		t.Errorf("branch point: got %s, want %s", m[1], sw)
	}
	if cursor, err := pglogrepl.ParseLSN(m[2]); err != nil || cursor < last {
		t.Errorf("cursor: got %s, want at least the last delivered commit %s", m[2], last)
	}
	if !strings.Contains(out, "To recover") {
		t.Errorf("walhook's output does not say how to recover:\n%s", out)
	}
	delivered.update(t, e.rcv.Messages())
	for id := 1001; id <= 1020; id++ {
		if delivered.count[id] > 0 {
			t.Errorf("row %d of the new timeline was delivered (%d times); walhook must stop before streaming it", id, delivered.count[id])
		}
	}
}

// TestFailoverCaughtUp: a switchover to a standby that has every change
// walhook delivered (the primary stops cleanly, so the standby gets all of
// its WAL) goes on: walhook follows the new primary through the multi-host
// URL, from its copy of the slot, and delivers every row of both timelines.
func TestFailoverCaughtUp(t *testing.T) {
	t.Parallel()
	e := startFailoverEnv(t)
	d := startWalhook(t, "run", "--config", e.cfg)
	insert(t, e.conn, 1, 50, 100)
	waitIDs(t, e.rcv, "t", idRange(1, 50), 60*time.Second)
	if err := e.primary.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	if err := e.standby.Promote(); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, e.standby.DSN("postgres"))
	insert(t, conn, 1001, 1050, 100)
	c := waitIDs(t, e.rcv, "t", append(idRange(1, 50), idRange(1001, 1050)...), 90*time.Second)
	if !d.running() {
		t.Fatalf("walhook exited (%v); output:\n%s", d.err, d.out.String())
	}
	waitOutput(t, d, "the source is on a new timeline", 1, 10*time.Second)
	t.Logf("switchover at %s: 100 rows delivered, %d redelivered", switchPoint(t, e.standby), c.duplicates())
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Errorf("walhook exited %d after SIGTERM, want 0", code)
	}
}

// TestOtherCluster: a state that belongs to one cluster refuses another,
// even with a slot of the same name there, naming both system identifiers.
func TestOtherCluster(t *testing.T) {
	t.Parallel()
	e := startFailoverEnv(t)
	d := startWalhook(t, "run", "--config", e.cfg)
	insert(t, e.conn, 1, 5, 10)
	waitIDs(t, e.rcv, "t", idRange(1, 5), 60*time.Second)
	if code := d.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("walhook exited %d after SIGTERM, want 0", code)
	}
	other := startServer(t, pgtest.Options{})
	oc := connect(t, other.DSN("postgres"))
	exec1(t, oc, `CREATE TABLE t (id int PRIMARY KEY, pad text)`)
	exec1(t, oc, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, failoverSlot)
	data, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := regexp.MustCompile(`url: "postgres://[^"]*"`).ReplaceAllString(string(data)[:strings.Index(string(data), "state:")],
		fmt.Sprintf("url: %q", other.DSN("postgres")))
	if err := os.WriteFile(e.cfg, []byte(url+string(data)[strings.Index(string(data), "state:"):]), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := func(srv *pgtest.Server) string {
		conn := connect(t, srv.ReplicationDSN("postgres"))
		sys, err := pglogrepl.IdentifySystem(context.Background(), conn.PgConn())
		if err != nil {
			t.Fatal(err)
		}
		return sys.SystemID
	}
	code, out := runWalhook(t, "run", "--config", e.cfg)
	if code != 1 {
		t.Errorf("walhook run on another cluster exited %d, want 1", code)
	}
	for _, want := range []string{"system identifier " + ids(e.primary), "system identifier " + ids(other), "walhook slot drop"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not contain %q:\n%s", want, out)
		}
	}
}
