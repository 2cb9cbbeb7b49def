package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/filter"
	"github.com/walhook/walhook/relay"
	"github.com/walhook/walhook/sink"
	"github.com/walhook/walhook/state"
)

// reloader applies the configuration file again on SIGHUP: what a sink
// can change live (its url, headers, secrets, batching, retry, timeout,
// filter, tables, actions, columns, window, backlog bounds, compression,
// TLS) and added or removed sinks. A change that cannot apply live (the
// source, the state, the admin server, the log, a sink's type, group_by or
// max_in_flight) refuses the whole reload with a log line naming the
// fields, and so does a file that does not validate: the old configuration
// keeps running.
type reloader struct {
	path    string
	r       *relay.Relay
	walEnd  func() pglogrepl.LSN // see buildSink
	allowed func() error         // see buildSink
	store   state.Store
	log     *slog.Logger

	mu    sync.Mutex
	cur   *config.Config
	dests map[string]destination
	pipes map[string]*sink.Pipeline

	// onCreate, when set, starts the backfills of sinks a reload added
	// with backfill.on_create.
	onCreate func(sinks []string)

	sig  chan os.Signal
	done chan struct{}
	wg   sync.WaitGroup
}

// watchReloads starts reloading on SIGHUP; stop ends it and closes the
// destinations it built.
func watchReloads(ctx context.Context, path string, cfg *config.Config, rr *relayRun, store state.Store, log *slog.Logger) *reloader {
	rl := &reloader{path: path, r: rr.relay, walEnd: rr.walEnd, allowed: rr.allowed, store: store, log: log, cur: cfg, dests: map[string]destination{}, pipes: map[string]*sink.Pipeline{},
		sig: make(chan os.Signal, 1), done: make(chan struct{})}
	for name, s := range rr.sinks {
		rl.dests[name], rl.pipes[name] = s.dest, s.pipe
	}
	signal.Notify(rl.sig, syscall.SIGHUP)
	rl.wg.Go(func() {
		for {
			select {
			case <-rl.sig:
				if added := rl.reload(ctx); len(added) > 0 {
					rl.mu.Lock()
					f := rl.onCreate
					rl.mu.Unlock()
					if f != nil {
						f(added) // once reload let go of the configuration the backfill reads
					}
				}
			case <-rl.done:
				return
			case <-ctx.Done():
				return
			}
		}
	})
	return rl
}

// setOnCreate sets what starts the backfills of sinks a reload adds.
func (rl *reloader) setOnCreate(f func(sinks []string)) {
	rl.mu.Lock()
	rl.onCreate = f
	rl.mu.Unlock()
}

// sink returns the named sink of the configuration running now.
func (rl *reloader) sink(name string) (config.Sink, bool) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for _, sc := range rl.cur.Sinks {
		if sc.Name == name {
			return sc, true
		}
	}
	return config.Sink{}, false
}

// liveSink is what the reloader needs of a running sink.
type liveSink struct {
	pipe *sink.Pipeline
	dest destination
}

func (rl *reloader) stop() {
	signal.Stop(rl.sig)
	close(rl.done)
	rl.wg.Wait()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for _, d := range rl.dests {
		d.Close()
	}
}

// reload applies the file again. It returns the sinks it added that have
// backfill.on_create and start for the first time.
func (rl *reloader) reload(ctx context.Context) (onCreate []string) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.log.Info("SIGHUP: reloading the configuration", "config", rl.path)
	next, err := loadConfig(rl.path)
	if err != nil {
		rl.log.Error("configuration not reloaded: the file does not validate; the old one keeps running", "err", secrets.Error(err))
		return
	}
	if fields := liveRefusals(rl.cur, next); len(fields) > 0 {
		rl.log.Error("configuration not reloaded: these cannot change while walhook runs; restart walhook to apply them. The old configuration keeps running",
			"fields", strings.Join(fields, ", "))
		return
	}
	exprs, err := filter.CompileSinks(next)
	if err != nil {
		rl.log.Error("configuration not reloaded", "err", secrets.Error(err))
		return
	}
	old := map[string]config.Sink{}
	for _, sc := range rl.cur.Sinks {
		old[sc.Name] = sc
	}
	// Build every new destination first, so that a bad one (a TLS file
	// that vanished) refuses the reload before anything changed.
	type change struct {
		sc   config.Sink
		dest destination
	}
	var changed, added []change
	fail := func(err error) {
		rl.log.Error("configuration not reloaded", "err", secrets.Error(err))
		for _, c := range append(changed, added...) {
			c.dest.Close()
		}
	}
	for _, sc := range next.Sinks {
		prev, ok := old[sc.Name]
		if ok && reflect.DeepEqual(prev, withOrigin(sc, prev)) {
			continue
		}
		dest, err := newDestination(sc, rl.log)
		if err != nil {
			fail(err)
			return
		}
		if ok {
			changed = append(changed, change{sc, dest})
		} else {
			added = append(added, change{sc, dest})
		}
	}
	// Apply. The relay answers each request without waiting for the
	// stream; the bound is for a state store that hangs.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var applied []string
	// What runs after the reload: the old configuration with every change
	// that applied, and only those, so that the next reload compares with
	// what really runs.
	running := map[string]config.Sink{}
	for name, sc := range old {
		running[name] = sc
	}
	for _, c := range changed {
		if err := rl.change(ctx, c.sc, c.dest, exprs[c.sc.Name]); err != nil {
			rl.log.Error("sink not reconfigured; it keeps its old settings", "sink", c.sc.Name, "err", secrets.Error(err))
			c.dest.Close()
			continue
		}
		running[c.sc.Name] = c.sc
		applied = append(applied, "changed "+c.sc.Name)
	}
	for _, c := range added {
		c.dest.Close() // buildSink makes its own
		s, dest, err := buildSink(c.sc, exprs[c.sc.Name], rl.r, rl.walEnd, rl.allowed, rl.store, rl.log)
		if err != nil {
			rl.log.Error("sink not added", "sink", c.sc.Name, "err", secrets.Error(err))
			continue
		}
		first := false
		if c.sc.Backfill.OnCreate {
			var err error
			if first, err = firstStart(ctx, rl.store, c.sc.Name); err != nil {
				rl.log.Error("backfill.on_create: cannot tell whether the sink is new", "sink", c.sc.Name, "err", err)
			}
		}
		if err := rl.r.AddSink(ctx, s); err != nil {
			dest.Close()
			rl.log.Error("sink not added", "sink", c.sc.Name, "err", err)
			continue
		}
		rl.dests[c.sc.Name], rl.pipes[c.sc.Name] = dest, s.Delivery.(*sink.Pipeline)
		running[c.sc.Name] = c.sc
		applied = append(applied, "added "+c.sc.Name)
		if first {
			onCreate = append(onCreate, c.sc.Name)
		}
	}
	for name := range old {
		if slices.ContainsFunc(next.Sinks, func(sc config.Sink) bool { return sc.Name == name }) {
			continue
		}
		if err := rl.r.RemoveSink(ctx, name); err != nil {
			rl.log.Error("sink not removed", "sink", name, "err", err)
			continue
		}
		if d := rl.dests[name]; d != nil {
			d.Close()
		}
		delete(rl.dests, name)
		delete(rl.pipes, name)
		delete(running, name)
		applied = append(applied, "removed "+name)
	}
	rl.cur = recorded(next, running)
	rl.log.Info("configuration reloaded", "changes", strings.Join(applied, ", "))
	return onCreate
}

// change applies a changed sink's settings: the relay's part (filter,
// columns, window, backlog bounds) first, since its runner may have
// stopped, then the pipeline's (batching, retry, destination), which only
// checks what validation already checked. It fails without changing
// anything.
func (rl *reloader) change(ctx context.Context, sc config.Sink, dest destination, expr *filter.Expr) error {
	pipe := rl.pipes[sc.Name]
	if pipe == nil {
		return fmt.Errorf("sink %q has no delivery engine to reconfigure", sc.Name)
	}
	var before relay.Sink
	err := rl.r.UpdateSink(ctx, sc.Name, func(s *relay.Sink) {
		before = *s
		s.Filter, s.Columns, s.Window = sink.NewFilter(sc, expr), sink.NewColumns(sc.Columns), sc.Window
		s.MaxSize, s.WhenFull, s.BatchSize = sc.Backlog.MaxSize, sc.Backlog.WhenFull, sc.BatchSize
		s.FilterErrors = sc.FilterErrors
	})
	if err != nil {
		return err
	}
	prevDest, err := pipe.Reconfigure(sc, dest)
	if err != nil {
		_ = rl.r.UpdateSink(ctx, sc.Name, func(s *relay.Sink) { *s = before })
		return err
	}
	if prevDest != nil {
		prevDest.(destination).Close()
	}
	rl.dests[sc.Name] = dest
	return nil
}

// recorded is next with the sinks that run after a reload, in next's
// order, then those a reload failed to remove.
func recorded(next *config.Config, running map[string]config.Sink) *config.Config {
	out := *next
	out.Sinks = nil
	for _, sc := range next.Sinks {
		if rs, ok := running[sc.Name]; ok {
			out.Sinks = append(out.Sinks, rs)
			delete(running, sc.Name)
		}
	}
	names := slices.Sorted(maps.Keys(running))
	for _, name := range names {
		out.Sinks = append(out.Sinks, running[name])
	}
	return &out
}

// withOrigin returns sc with prev's filter origin, which says where the
// filter was written and changes with any edit above it.
func withOrigin(sc, prev config.Sink) config.Sink {
	sc.FilterOrigin = prev.FilterOrigin
	return sc
}

// liveRefusals names what differs between cur and next that cannot change
// while walhook runs.
func liveRefusals(cur, next *config.Config) []string {
	var out []string
	diff := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	// Every source key, walked by reflection so that a key added later
	// cannot be forgotten here.
	cs, ns := reflect.ValueOf(cur.Source), reflect.ValueOf(next.Source)
	for i := range cs.NumField() {
		diff("source."+snake(cs.Type().Field(i).Name), cs.Field(i).Interface(), ns.Field(i).Interface())
	}
	diff("state", cur.State, next.State)
	diff("server", cur.Server, next.Server)
	diff("log", cur.Log, next.Log)
	diff("events", cur.Events, next.Events)
	old := map[string]config.Sink{}
	for _, sc := range cur.Sinks {
		old[sc.Name] = sc
	}
	for i, sc := range next.Sinks {
		prev, ok := old[sc.Name]
		if !ok {
			continue
		}
		p := fmt.Sprintf("sinks[%d] (%s).", i, sc.Name)
		diff(p+"type", prev.Type, sc.Type)
		diff(p+"group_by", prev.GroupBy, sc.GroupBy)
		diff(p+"max_in_flight", prev.MaxInFlight, sc.MaxInFlight)
		diff(p+"batch_by", prev.BatchBy, sc.BatchBy)
	}
	return out
}
