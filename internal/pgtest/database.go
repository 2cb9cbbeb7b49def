package pgtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// maxIdentifier is PostgreSQL's longest identifier, in bytes.
	maxIdentifier = 63
	// cleanupTimeout bounds dropping a test's database.
	cleanupTimeout = 30 * time.Second
)

// NewDatabase creates an empty database on srv for the test and returns
// its DSN (see [Server.DSN]). Its name comes from the test's name plus a
// random suffix, so parallel tests and repeated runs never collide.
//
// When the test ends, the database goes: NewDatabase terminates the
// sessions connected to it, drops the replication slots of the database
// (terminating the connections streaming from them first) and drops the
// database. A server the test left stopped is not touched. Failures are test
// errors.
func NewDatabase(t testing.TB, srv *Server) string {
	t.Helper()
	if srv == nil {
		t.Fatal("pgtest: NewDatabase: no server (does TestMain call pgtest.Main?)")
		return ""
	}
	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.adminDSN())
	if err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
		return ""
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
		return ""
	}
	t.Cleanup(func() {
		if !srv.isRunning() {
			t.Logf("pgtest: server stopped, database %s left to it", name)
			return
		}
		if err := srv.dropDatabase(name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return srv.DSN(name)
}

// databaseName makes a unique database name from a test name: lower-case
// letters, digits and underscores, a random suffix, at most 63 bytes.
func databaseName(testName string) string {
	suffix := fmt.Sprintf("_%08x", rand.Uint32())
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if b.Len() == maxIdentifier-len(suffix) {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String() + suffix
}

// adminDSN is where databases are created and dropped from.
func (s *Server) adminDSN() string {
	if s.externalDSN != "" {
		return s.externalDSN
	}
	return s.DSN("postgres")
}

// dropDatabase drops database name, after its sessions and its replication
// slots.
func (s *Server) dropDatabase(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.adminDSN())
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(ctx)

	// Logical walsenders are sessions of the database too, so this also
	// releases the slots they stream from.
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
		return fmt.Errorf("drop database %s: terminate sessions: %w", name, err)
	}
	if err := dropSlots(ctx, conn, name); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	// FORCE (PostgreSQL 13) terminates sessions that connected meanwhile.
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// dropSlots drops the replication slots of database db. A slot in use is
// released by terminating its walsender, which takes a moment, so dropSlots
// retries until ctx ends.
func dropSlots(ctx context.Context, conn *pgx.Conn, db string) error {
	for {
		rows, err := conn.Query(ctx, `SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1`, db)
		if err != nil {
			return fmt.Errorf("list replication slots: %w", err)
		}
		type slot struct {
			name string
			pid  *int32
		}
		slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (slot, error) {
			var s slot
			return s, row.Scan(&s.name, &s.pid)
		})
		if err != nil {
			return fmt.Errorf("list replication slots: %w", err)
		}
		if len(slots) == 0 {
			return nil
		}
		var lastErr error
		for _, sl := range slots {
			if sl.pid != nil {
				if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", *sl.pid); err != nil {
					return fmt.Errorf("release replication slot %s: %w", sl.name, err)
				}
			}
			_, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", sl.name)
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
			case errors.As(err, &pgErr) && pgErr.Code == "55006": // object_in_use: still active
				lastErr = err
			case errors.As(err, &pgErr) && pgErr.Code == "42704": // undefined_object: gone already
			default:
				return fmt.Errorf("drop replication slot %s: %w", sl.name, err)
			}
		}
		if lastErr == nil {
			continue // check that no slot appeared meanwhile
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop replication slots: %w", lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
