package pgtest

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestWantedVersion(t *testing.T) {
	tests := []struct {
		env     string
		opts    Options
		want    int
		wantErr string
	}{
		{env: "", want: 0},
		{env: "17", want: 17},
		{env: "17", opts: Options{Version: 14}, want: 14},
		{env: "", opts: Options{Version: 18}, want: 18},
		{env: "13", wantErr: "WALHOOK_TEST_PG=\"13\": want a PostgreSQL major version"},
		{env: "seventeen", wantErr: "want a PostgreSQL major version"},
		{opts: Options{Version: 19}, wantErr: "Options.Version 19: want one of"},
	}
	for _, tt := range tests {
		t.Setenv(VersionEnv, tt.env)
		got, err := wantedVersion(tt.opts)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("env %q, opts %+v: got %d, %v, want an error containing %q", tt.env, tt.opts, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("env %q, opts %+v: got %d, %v, want %d", tt.env, tt.opts, got, err, tt.want)
		}
	}
}

func TestVersionBinariesMissing(t *testing.T) {
	_, err := versionBinaries(16, t.TempDir(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "make pg-versions") {
		t.Errorf("versionBinaries with nothing installed: got %v, want an error naming make pg-versions", err)
	}
}

func TestMajorVersion(t *testing.T) {
	for in, want := range map[string]int{"17.10": 17, "18.4 (Debian 18.4-1.pgdg)": 18, "14.23": 14, "9.6.1": 9, "": 0, "x": 0} {
		if got := majorVersion(in); got != want {
			t.Errorf("majorVersion(%q): got %d, want %d", in, got, want)
		}
	}
}

// TestEveryVersion starts a cluster of each supported version and checks
// that it is that version and can stream logical changes with pgoutput:
// the binaries `make pg-versions` installs must run as the cluster's
// owner.
func TestEveryVersion(t *testing.T) {
	t.Parallel()
	for _, v := range Versions {
		t.Run(strconv.Itoa(v), func(t *testing.T) {
			t.Parallel()
			srv, err := Start(Options{Version: v})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if got := srv.Version(); got != v {
				t.Errorf("Version: got %d, want %d", got, v)
			}
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, srv.DSN(""))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var num int
			if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int / 10000").Scan(&num); err != nil {
				t.Fatal(err)
			}
			if num != v {
				t.Errorf("server_version_num: got major %d, want %d", num, v)
			}
			if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('v', 'pgoutput')"); err != nil {
				t.Fatalf("create a pgoutput slot: %v", err)
			}
			if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE t; INSERT INTO t VALUES (1)"); err != nil {
				t.Fatal(err)
			}
			var changes int
			err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_get_binary_changes('v', NULL, NULL,
				'proto_version', '1', 'publication_names', 'p')`).Scan(&changes)
			if err != nil {
				t.Fatalf("decode with pgoutput: %v", err)
			}
			if changes < 3 { // begin, relation, insert, commit
				t.Errorf("pgoutput changes: got %d, want at least 3", changes)
			}
		})
	}
}
