package redis

import (
	"context"
	"fmt"
	"io"

	goredis "github.com/redis/go-redis/v9"
	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink/broker"
)

// Check tells whether cfg's server is reachable and takes walhook's
// credentials, and what each table's stream is (see factory.Check). A
// stream that does not exist yet is fine: the first XADD creates it.
func Check(ctx context.Context, out io.Writer, cfg config.Sink, tables []config.Table) []string {
	s, err := New(cfg, Options{})
	if err != nil {
		return []string{err.Error()}
	}
	defer s.Close()
	prefix := fmt.Sprintf("sink %s (redis %s)", cfg.Name, s.server)
	if err := s.client.Ping(ctx).Err(); err != nil {
		msg := fmt.Sprintf("%s: %v", prefix, s.classify(err, ""))
		fmt.Fprintln(out, msg)
		return []string{msg}
	}
	version := "?"
	if info, err := s.client.InfoMap(ctx, "server").Result(); err == nil {
		version = info["Server"]["redis_version"]
	}
	fmt.Fprintf(out, "%s: connected and authenticated (Redis %s)\n", prefix, version)
	var problems []string
	for _, n := range broker.Names(s.stream, cfg, tables) {
		if p := checkStream(ctx, out, s.client, prefix, n.Table, n.Name); p != "" {
			problems = append(problems, p)
		}
	}
	return problems
}

// checkStream reports what the key of a table's stream holds.
func checkStream(ctx context.Context, out io.Writer, c *goredis.Client, prefix string, t config.Table, stream string) string {
	typ, err := c.Type(ctx, stream).Result()
	var msg string
	switch {
	case err != nil:
		msg = fmt.Sprintf("%s: table %s maps to stream %s: TYPE: %v", prefix, t, stream, err)
	case typ == "none":
		fmt.Fprintf(out, "%s: table %s maps to stream %s (not there yet; the first change creates it)\n", prefix, t, stream)
		return ""
	case typ == "stream":
		n, _ := c.XLen(ctx, stream).Result()
		fmt.Fprintf(out, "%s: table %s maps to stream %s (%d entries)\n", prefix, t, stream, n)
		return ""
	default:
		msg = fmt.Sprintf("%s: table %s maps to stream %s, but that key holds a %s; delete or rename it, or change stream", prefix, t, stream, typ)
	}
	fmt.Fprintln(out, msg)
	return msg
}
