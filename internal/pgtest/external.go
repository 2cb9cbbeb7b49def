package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ExternalEnv names the environment variable that points [Main] at an
// existing server instead of a cluster of its own: a DSN as a URL
// (postgres://user@host:port/db?sslmode=disable) or as key=value pairs. The
// server needs wal_level=logical for walhook's tests, and its user must be
// allowed to create databases and replication slots.
const ExternalEnv = "WALHOOK_TEST_DSN"

// external returns the server named by dsn once it answers.
func external(dsn string) (*Server, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ExternalEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the server in %s: %w", ExternalEnv, err)
	}
	version := majorVersion(conn.ParameterStatus("server_version"))
	if err := conn.Close(ctx); err != nil {
		return nil, fmt.Errorf("connect to the server in %s: %w", ExternalEnv, err)
	}
	return &Server{externalDSN: dsn, port: int(cfg.Port), version: version}, nil
}

// isURL reports whether dsn is a URL rather than key=value pairs.
func isURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// withDatabase returns dsn connecting to database db instead.
func withDatabase(dsn, db string) string {
	if isURL(dsn) {
		if u, err := url.Parse(dsn); err == nil {
			u.Path = "/" + db
			u.RawPath = ""
			return u.String()
		}
	}
	// In key=value form the last setting of a key wins.
	return dsn + " dbname=" + quoteKeyword(db)
}

// withParam returns dsn with the run-time parameter key set to value.
func withParam(dsn, key, value string) string {
	if isURL(dsn) {
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			q.Set(key, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return dsn + " " + key + "=" + quoteKeyword(value)
}

// quoteKeyword quotes a value for a key=value DSN.
func quoteKeyword(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", `\'`) + "'"
}
