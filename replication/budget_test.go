package replication

import "testing"

func TestBudget(t *testing.T) {
	b := NewBudget(100)
	a, c := b.Taker(), b.Taker()
	if !b.reserve(60) || !b.reserve(40) {
		t.Fatal("reserving 100 of a budget of 100 failed")
	}
	if b.reserve(1) {
		t.Fatal("reserved past the budget")
	}
	a.Took(60)
	if b.reserve(1) {
		t.Fatal("one consumer took 60, the other nothing: want the budget still spent")
	}
	c.Took(60)
	if got := b.InUse(); got != 40 {
		t.Fatalf("in use: got %d, want 40", got)
	}
	if !b.reserve(60) {
		t.Fatal("both took the first 60: want room for 60")
	}
	a.Took(100)
	c.Took(100)
	// A message larger than the budget passes when nothing is in use.
	if !b.reserve(500) {
		t.Fatal("a message larger than the budget did not pass an empty budget")
	}
	if b.reserve(1) {
		t.Fatal("reserved behind a message larger than the budget")
	}
	var none *Budget
	if !none.reserve(1 << 40) {
		t.Fatal("a nil budget refused a message")
	}
}
