package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/kafkatest"
	"github.com/walhook/walhook/sink"
)

const txTopic = "walhook.public.odd_name_x"

func txConfig(brokers []string) config.Sink {
	cfg := testConfig(brokers)
	cfg.BatchBy = config.BatchByTransaction
	return cfg
}

// deliverPart delivers part (from 1) of a transaction of msgs cut in
// parts of size.
func deliverPart(ctx context.Context, s *Sink, msgs []*change.Message, size, part int) error {
	from, to := (part-1)*size, min(part*size, len(msgs))
	tx := &change.Transaction{XID: 7, CommitLSN: 0x1000, CommitTime: msgs[0].CommitTime, Part: part, Last: to == len(msgs)}
	return s.Deliver(ctx, &sink.Batch{ID: fmt.Sprint(part), Attempt: 1, Messages: msgs[from:to], Sink: "orders", Tx: tx})
}

// TestKafkaTransaction: under batch_by: transaction a transaction's parts
// are produced in one Kafka transaction: after its first part a
// read_committed consumer sees none of it (a read_uncommitted one sees the
// part), after the last it sees all of it, each record with walhook-xid.
func TestKafkaTransaction(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(1, txTopic))
	brokers := c.ListenAddrs()
	s := newSink(t, txConfig(brokers))
	msgs := messages(5, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := deliverPart(ctx, s, msgs, 3, 1); err != nil {
		t.Fatalf("part 1: %v", err)
	}
	if got := kafkatest.EndOffset(t, brokers, txTopic, kafkatest.ReadUncommitted); got != 3 {
		t.Fatalf("after part 1: read_uncommitted end %d, want 3", got)
	}
	if got := kafkatest.EndOffset(t, brokers, txTopic, kafkatest.ReadCommitted); got != 0 {
		t.Fatalf("after part 1: read_committed end %d, want 0 (nothing of the transaction)", got)
	}
	if err := deliverPart(ctx, s, msgs, 3, 2); err != nil {
		t.Fatalf("part 2: %v", err)
	}
	got := kafkatest.ConsumeCommitted(t, brokers, txTopic, 5, 20*time.Second)
	for i, r := range got {
		if string(r.Value) != string(msgs[i].AppendJSON(nil, "orders")) {
			t.Errorf("record %d: got %s, want message %d", i, r.Value, i)
		}
		var xid, last string
		for _, h := range r.Headers {
			switch h.Key {
			case "walhook-xid":
				xid = string(h.Value)
			case "walhook-tx-last":
				last = string(h.Value)
			}
		}
		if xid != "7" || last != fmt.Sprint(i == 4) {
			t.Errorf("record %d: got walhook-xid %q walhook-tx-last %q, want 7 %v", i, xid, last, i == 4)
		}
	}
	// Another transaction goes after it, in a Kafka transaction of its own.
	more := messages(2, 2)
	for _, m := range more {
		m.Pos.CommitLSN = 0x2000
	}
	if err := s.Deliver(ctx, &sink.Batch{ID: "next", Attempt: 1, Messages: more, Sink: "orders",
		Tx: &change.Transaction{XID: 8, CommitLSN: 0x2000, Part: 1, Last: true}}); err != nil {
		t.Fatalf("next transaction: %v", err)
	}
	if got := kafkatest.ConsumeCommitted(t, brokers, txTopic, 7, 20*time.Second); len(got) != 7 {
		t.Fatalf("got %d committed records, want 7", len(got))
	}
}

// TestKafkaTransactionRestart: a walhook that stops after a transaction's
// first part (its sink closed without committing) and starts again with
// the same transactional ID: the new producer refuses the later part alone,
// produces the transaction again from part 1, and a read_committed
// consumer sees it exactly once, whole.
func TestKafkaTransactionRestart(t *testing.T) {
	c := cluster(t, kfake.SeedTopics(1, txTopic))
	brokers := c.ListenAddrs()
	msgs := messages(5, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := New(txConfig(brokers), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := deliverPart(ctx, first, msgs, 3, 1); err != nil {
		t.Fatalf("part 1: %v", err)
	}
	first.Close() // the crash: part 1 produced, not committed

	s := newSink(t, txConfig(brokers))
	if err := deliverPart(ctx, s, msgs, 3, 2); err == nil || !sink.NeedsOperator(err) {
		t.Fatalf("part 2 alone after the restart: got %v, want an operator's error", err)
	}
	for part := 1; part <= 2; part++ {
		if err := deliverPart(ctx, s, msgs, 3, part); err != nil {
			t.Fatalf("part %d after the restart: %v", part, err)
		}
	}
	got := kafkatest.ConsumeCommitted(t, brokers, txTopic, 5, 20*time.Second)
	for i, r := range got {
		if string(r.Value) != string(msgs[i].AppendJSON(nil, "orders")) {
			t.Errorf("record %d: got %s, want message %d", i, r.Value, i)
		}
	}
	// The first walhook's part 1 was aborted: the records before the
	// transaction's (which come first, in offset order) would be its copy.
}
