package pgstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/walhook/walhook/internal/pgtest"
	"github.com/walhook/walhook/state"
	"github.com/walhook/walhook/state/statetest"
)

func TestMain(m *testing.M) {
	if statetest.InChild() {
		os.Exit(m.Run()) // the parent's server is named in the location
	}
	pgtest.Main(m)
}

var slots atomic.Int64

// TestConformance runs the suite with every store of a test on its own
// slot of one database, as instances on different slots share one.
func TestConformance(t *testing.T) {
	var dsn string
	if statetest.InChild() {
		dsn = "unused: the child opens the location it is given"
	} else {
		dsn = pgtest.NewDatabase(t, pgtest.Shared())
	}
	statetest.Run(t, statetest.Harness{
		New: func(t *testing.T) string {
			return fmt.Sprintf("slot_%d_%d|%s", os.Getpid(), slots.Add(1), dsn)
		},
		Open: func(t *testing.T, loc string) (state.Store, error) {
			slot, url, _ := strings.Cut(loc, "|")
			return Open(context.Background(), url, slot, Options{})
		},
	})
}
