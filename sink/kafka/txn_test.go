package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/walhook/walhook/change"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink"
)

const txTopic = "walhook.public.odd_name_x"

// endOffset is the end of partition 0 of txTopic as a consumer of the
// isolation level sees it: the high watermark for read_uncommitted (0), the
// last stable offset for read_committed (1).
func endOffset(t *testing.T, brokers []string, isolation int8) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = isolation
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = txTopic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = 0, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].Offset
}

// consumeCommitted reads n records of txTopic as a read_committed consumer.
func consumeCommitted(t *testing.T, brokers []string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(txTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read_committed: got %d records, want %d", len(got), n)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got
}

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
	if got := endOffset(t, brokers, 0); got != 3 {
		t.Fatalf("after part 1: read_uncommitted end %d, want 3", got)
	}
	if got := endOffset(t, brokers, 1); got != 0 {
		t.Fatalf("after part 1: read_committed end %d, want 0 (nothing of the transaction)", got)
	}
	if err := deliverPart(ctx, s, msgs, 3, 2); err != nil {
		t.Fatalf("part 2: %v", err)
	}
	got := consumeCommitted(t, brokers, 5)
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
	if got := consumeCommitted(t, brokers, 7); len(got) != 7 {
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
	got := consumeCommitted(t, brokers, 5)
	for i, r := range got {
		if string(r.Value) != string(msgs[i].AppendJSON(nil, "orders")) {
			t.Errorf("record %d: got %s, want message %d", i, r.Value, i)
		}
	}
	// The first walhook's part 1 was aborted: the records before the
	// transaction's (which come first, in offset order) would be its copy.
}
