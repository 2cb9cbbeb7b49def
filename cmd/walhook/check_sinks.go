package main

import (
	"context"
	"io"
	"slices"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/replication"
	"github.com/walhook/walhook/sink/factory"
)

// checkSinkTimeout bounds what walhook check asks one sink's destination.
const checkSinkTimeout = 15 * time.Second

// checkSinks asks each sink's destination, by its type, whether it would
// take the sink's messages; ids are the captured tables. It returns the
// problems found, each naming its fix.
func checkSinks(ctx context.Context, out io.Writer, cfg *config.Config, ids []replication.Identity) []string {
	var problems []string
	for _, sc := range cfg.Sinks {
		var tables []config.Table
		for _, id := range ids {
			if cfg.State.URL != "" && id.Table.Schema == "walhook" {
				continue
			}
			if len(sc.Tables) == 0 || slices.Contains(sc.Tables, id.Table) {
				tables = append(tables, id.Table)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, checkSinkTimeout)
		problems = append(problems, factory.CheckSink(cctx, out, sc, tables)...)
		cancel()
	}
	return problems
}
