package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/walhook/walhook/internal/kafkatest"
	"github.com/walhook/walhook/internal/pgtest"
)

// TestKafkaTransactionKilled: batch_by: transaction on Kafka through the
// real binary. A transaction of three parts is produced, and walhook is
// killed with SIGKILL while it commits the Kafka transaction (kfake holds
// the EndTxn request, then drops the connection): a read_committed
// consumer sees none of it meanwhile. After the restart, the new producer
// fences the killed one, walhook produces the transaction again whole, and
// a read_committed consumer sees it exactly once, each record with
// walhook-xid and walhook-tx-last on the last one only.
func TestKafkaTransactionKilled(t *testing.T) {
	t.Parallel()
	const rows, topic = 25, "walhook.public.odd_name_x"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var hold atomic.Bool
	hold.Store(true)
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !hold.Load() {
			return nil, nil, false
		}
		select {
		case held <- struct{}{}:
		default:
		}
		c.SleepControl(func() { <-release })
		return nil, errors.New("the producer was killed"), true // drop it: the commit never happens
	})

	dsn := pgtest.NewDatabase(t, pgtest.Shared())
	conn := connect(t, dsn)
	brokerTables(t, conn)
	cfg, _ := writeAdminBrokerConfig(t, dsn, "kafka_tx", "k", fmt.Sprintf("    type: kafka\n    brokers: [%q]\n    topic: \"walhook.{schema}.{table}\"\n"+
		"    retry: {initial: 50ms, max: 500ms}\n    timeout: 5s\n    batch_by: transaction\n    batch_size: 10\n", c.ListenAddrs()[0]))
	d := startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	waitStreaming(t, conn, "kafka_tx", d)
	exec1(t, conn, `INSERT INTO "odd.name x" SELECT g, 0 FROM generate_series(1, $1) g`, rows)

	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("walhook did not commit a Kafka transaction within 30 s")
	}
	if hwm, lso := kafkatest.EndOffset(t, c.ListenAddrs(), topic, kafkatest.ReadUncommitted), kafkatest.EndOffset(t, c.ListenAddrs(), topic, kafkatest.ReadCommitted); hwm < rows || lso != 0 {
		t.Fatalf("while the commit is held: end %d, last stable offset %d; want every record produced (%d) and none visible to read_committed", hwm, lso, rows)
	}
	d.kill(t)
	hold.Store(false)
	close(release)

	startWalhook(t, "run", "--config", cfg, "--shutdown-timeout", "1s")
	got := kafkatest.ConsumeCommitted(t, c.ListenAddrs(), topic, rows, 30*time.Second)
	xids := map[string]bool{}
	for i, r := range got {
		var b body
		if err := json.Unmarshal(r.Value, &b); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !strings.HasSuffix(b.Metadata.Key, fmt.Sprintf(":%d", i)) {
			t.Errorf("record %d: idempotency key %s, want commit_idx %d", i, b.Metadata.Key, i)
		}
		h := map[string]string{}
		for _, kv := range r.Headers {
			h[kv.Key] = string(kv.Value)
		}
		xids[h["walhook-xid"]] = true
		if h["walhook-tx-last"] != fmt.Sprint(i == rows-1) {
			t.Errorf("record %d: walhook-tx-last %q, want %v", i, h["walhook-tx-last"], i == rows-1)
		}
	}
	if len(got) != rows || len(xids) != 1 || xids[""] {
		t.Fatalf("read_committed: got %d records of xids %v, want the transaction once (%d records, one xid)", len(got), xids, rows)
	}
}
