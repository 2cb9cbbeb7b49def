package main

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The kill storm every broker type goes through (issue 19): under a steady
// load, walhook is killed with SIGKILL every second and started again, and
// the broker is killed and restarted once while walhook streams.

// kvLoad writes versions of the rows of kv (k int primary key, v int) from
// a goroutine of its own until stopped: version 1 inserts kvKeys rows,
// each later version updates every row to it, kvPerTx rows a transaction.
// The table is the truth of what committed.
type kvLoad struct {
	stop chan struct{}
	done chan error
}

const kvKeys, kvPerTx = 64, 16

func startKVLoad(t *testing.T, dsn string) *kvLoad {
	t.Helper()
	conn := connect(t, dsn)
	l := &kvLoad{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		ctx := context.Background()
		for v := 1; ; v++ {
			for lo := 0; lo < kvKeys; lo += kvPerTx {
				select {
				case <-l.stop:
					l.done <- nil
					return
				case <-time.After(40 * time.Millisecond): // about 400 changes a second
				}
				var err error
				if v == 1 {
					_, err = conn.Exec(ctx, `INSERT INTO kv SELECT k, 1 FROM generate_series($1::int, $2::int) k`, lo, lo+kvPerTx-1)
				} else {
					_, err = conn.Exec(ctx, `UPDATE kv SET v = $1 WHERE k BETWEEN $2 AND $3`, v, lo, lo+kvPerTx-1)
				}
				if err != nil {
					l.done <- err
					return
				}
			}
		}
	}()
	t.Cleanup(func() { l.Stop(t) })
	return l
}

// Stop stops the load and waits for it; it fails the test if a write
// failed.
func (l *kvLoad) Stop(t *testing.T) {
	t.Helper()
	select {
	case <-l.stop:
		return
	default:
		close(l.stop)
	}
	if err := <-l.done; err != nil {
		t.Errorf("the load: %v", err)
	}
}

// killStorm runs walhook with cfg and, once it streams from slot, the kv
// load on dsn (whose kv table must exist); it kills walhook with SIGKILL
// kills times, each incarnation a second after it began streaming. At the
// middle kill the broker (when it can be restarted) goes down, and at the
// next one it comes back, so walhook delivers through an outage and a
// restarted broker. It stops the load and returns the last walhook,
// streaming.
func killStorm(t *testing.T, conn *pgx.Conn, dsn, cfg, slot string, kills int, b *brokerUnderTest) *daemon {
	t.Helper()
	d := startWalhook(t, "run", "--config", cfg)
	pid := waitActive(t, conn, slot, 0, d, 30*time.Second)
	load := startKVLoad(t, dsn)
	brokerDown := false
	for i := 1; i <= kills; i++ {
		time.Sleep(time.Second) // the fault schedule
		if !d.running() {
			t.Fatalf("walhook exited by itself: %v\n%s", d.err, d.out.String())
		}
		switch {
		case b.restart == nil:
		case i == kills/2:
			b.kill()
			brokerDown = true
		case brokerDown:
			b.restart()
			brokerDown = false
		}
		d.kill(t)
		d = startWalhook(t, "run", "--config", cfg)
		pid = waitActive(t, conn, slot, pid, d, 30*time.Second)
	}
	if brokerDown {
		b.restart()
	}
	load.Stop(t)
	return d
}

// waitKV waits until the broker holds every version of every row the kv
// table went through, and checks that each row's versions first arrived
// in commit order. It returns the messages the broker holds and how many
// distinct idempotency keys they carry.
func waitKV(t *testing.T, conn *pgx.Conn, b *brokerUnderTest, names []string) (msgs []brokerMsg, distinct int) {
	t.Helper()
	final := map[int]int{} // per key, its last version
	rows, err := conn.Query(context.Background(), `SELECT k, v FROM kv`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, v int
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		final[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, v := range final {
		want += v
	}
	type kv struct{ k, v int }
	var first map[int][]int // per key, its versions in the order they first arrived
	waitUntil(t, 90*time.Second, "every version of every row", func() bool {
		msgs = b.messages(t, names)
		first = map[int][]int{}
		got := map[kv]bool{}
		for _, m := range msgs {
			var r struct {
				Record struct{ K, V int } `json:"record"`
			}
			if err := json.Unmarshal(m.Body, &r); err != nil {
				t.Fatalf("body %q: %v", m.Body, err)
			}
			c := kv{r.Record.K, r.Record.V}
			if !got[c] {
				got[c] = true
				first[c.k] = append(first[c.k], c.v)
			}
		}
		return len(got) >= want
	})
	for k, v := range final {
		if vs := first[k]; len(vs) != v || !slices.IsSorted(vs) {
			t.Errorf("key %d: versions first arrived in the order %v, want 1 to %d in order", k, vs, v)
		}
	}
	keys := map[string]bool{}
	for _, m := range msgs {
		keys[m.Headers["walhook-idempotency-key"]] = true
	}
	return msgs, len(keys)
}
