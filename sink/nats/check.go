package nats

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink/broker"
)

// minDuplicates is the shortest duplicate window check accepts without a
// warning: a batch retried later than the window is stored twice.
const minDuplicates = 2 * time.Minute

// Check tells whether cfg's server is reachable and takes walhook's
// credentials, and which stream takes each subject the tables map to
// (see factory.Check).
func Check(ctx context.Context, out io.Writer, cfg config.Sink, tables []config.Table) []string {
	servers := redactURLs(cfg.NATS.URL)
	prefix := fmt.Sprintf("sink %s (nats %s)", cfg.Name, servers)
	subject, err := broker.Parse(cfg.NATS.Subject, Forbidden)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", prefix, err)}
	}
	options, err := connectOptions(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", prefix, err)}
	}
	nc, err := natsgo.Connect(cfg.NATS.URL, options...)
	if err != nil {
		fix := "start the server, or correct url"
		if isAuth(err) {
			fix = "check creds_file, nkey_file or the user and password in url"
		}
		fmt.Fprintf(out, "%s: cannot connect: %v\n", prefix, err)
		return []string{fmt.Sprintf("%s: cannot connect: %v; %s", prefix, err, fix)}
	}
	defer nc.Close()
	fmt.Fprintf(out, "%s: connected and authenticated (server %s, max_payload %d bytes)\n", prefix, nc.ConnectedServerVersion(), nc.MaxPayload())
	js, err := jetstream.New(nc)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", prefix, err)}
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		msg := fmt.Sprintf("%s: JetStream is not available: %v; start nats-server with -js (or jetstream {} in its configuration) and enable it for the account", prefix, err)
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	var problems []string
	for _, n := range broker.Names(subject, cfg, tables) {
		problems = append(problems, checkSubject(ctx, out, js, prefix, n.Table, n.Name, cfg.NATS.Subject)...)
	}
	return problems
}

// checkSubject reports the stream that takes subject, and its duplicate
// window.
func checkSubject(ctx context.Context, out io.Writer, js jetstream.JetStream, prefix string, t config.Table, subject, template string) []string {
	stream, err := js.StreamNameBySubject(ctx, subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		msg := fmt.Sprintf("%s: table %s maps to subject %s, which no JetStream stream takes; create one (e.g. nats stream add WALHOOK --subjects %q)", prefix, t, subject, wildcardOf(template))
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	if err != nil {
		msg := fmt.Sprintf("%s: table %s maps to subject %s: looking up its stream: %v", prefix, t, subject, err)
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		msg := fmt.Sprintf("%s: table %s maps to subject %s, taken by stream %s: %v", prefix, t, subject, stream, err)
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	dup := s.CachedInfo().Config.Duplicates
	fmt.Fprintf(out, "%s: table %s maps to subject %s, taken by stream %s (duplicate window %s)\n", prefix, t, subject, stream, dup)
	if dup < minDuplicates {
		fmt.Fprintf(out, "  warning: stream %s keeps message ids for %s only: a batch published again later than that (a long outage, a restart) is stored twice; "+
			"raise it to at least %s (nats stream edit %s --dupe-window %s)\n", stream, dup, minDuplicates, stream, minDuplicates)
	}
	return nil
}
