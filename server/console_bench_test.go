package server_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/admintest"
	"github.com/walhook/walhook/server"
)

// BenchmarkConsolePages renders the console's pages for 50 sinks, one of
// them with 10,000 dead letters (the list shows 50 a page), and 20
// backfills. The target is under 50 ms a page.
func BenchmarkConsolePages(b *testing.B) {
	var names []string
	for i := range 50 {
		names = append(names, fmt.Sprintf("sink_%02d", i))
	}
	fake := admintest.NewFake(names...)
	now := time.Now().UTC()
	for i := range fake.Report.Sinks {
		k := &fake.Report.Sinks[i]
		k.Type, k.Delivered, k.DeliveredPerSec, k.LagBytes, k.DeadLetters = "webhook", 123456, 42.5, 1<<20, 10000
		if i%7 == 0 {
			k.State, k.LastError = "failing", "receiver answered 503 Service Unavailable: \"try later\""
		}
	}
	var dead []server.DeadLetter
	for i := range 10000 {
		dead = append(dead, server.DeadLetter{ID: fmt.Sprintf("dl_%05d", i), Sink: "sink_00", Count: 10, Attempts: 5, Reason: "max_attempts",
			LastStatus: 500, LastError: "receiver answered 500 Internal Server Error", FirstAttemptAt: now, LastAttemptAt: now})
	}
	fake.Dead["sink_00"] = dead
	for i := range 20 {
		fake.Runs = append(fake.Runs, server.Backfill{ID: fmt.Sprintf("bf_%02d", i), Sink: names[i], State: "running", RowsDone: 5000, RowsEstimate: 20000, RowsPerSec: 900,
			Tables: []server.TableProgress{{Table: "public.orders", RowsDone: 5000, RowsEstimate: 20000}}, StartedAt: now})
	}
	fake.Report.Backfills = fake.Runs
	fake.Settings = map[string][]server.Setting{"sink_00": {{Key: "url", Value: "http://receiver/hook"}, {Key: "batch_size", Value: "100"}}}
	h := server.New(config.Server{Listen: "127.0.0.1:0"}, fake.Options(names...)).Handler()

	for _, page := range []string{"/", "/console/sinks/sink_00", "/console/sinks/sink_00/dlq", "/console/sinks/sink_00/dlq?page=200", "/console/backfills"} {
		b.Run(page, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1:9400"+page, nil))
				if rec.Code != 200 {
					b.Fatalf("GET %s: %d", page, rec.Code)
				}
			}
		})
	}
}
