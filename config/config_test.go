package config

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// testSecret is a valid Standard Webhooks secret.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// testEnv is the environment the fixtures are parsed with. Secret values
// here and in testdata/config/bad contain "hunter2", which no error message
// may show.
var testEnv = map[string]string{
	"PGPASSWORD":     "hunter2-pg",
	"WALHOOK_TOKEN":  "hunter2-token",
	"WEBHOOK_SECRET": testSecret,
	"TOKEN":          "hunter2-bearer",
	"EMPTY":          "",
}

func lookup(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func parseFile(t *testing.T, path string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(path, data, lookup(testEnv))
}

func mustParse(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := Parse("test.yaml", []byte(yaml), lookup(testEnv))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// assertConfig compares a config section by section, so a failure shows the
// section that differs.
func assertConfig(t *testing.T, got, want *Config) {
	t.Helper()
	sections := []struct {
		name      string
		got, want any
	}{
		{"Path", got.Path, want.Path},
		{"Source", got.Source, want.Source},
		{"State", got.State, want.State},
		{"Server", got.Server, want.Server},
		{"Log", got.Log, want.Log},
		{"len(Sinks)", len(got.Sinks), len(want.Sinks)},
	}
	for i := range min(len(got.Sinks), len(want.Sinks)) {
		sections = append(sections, struct {
			name      string
			got, want any
		}{"Sinks[" + string(rune('0'+i)) + "]", got.Sinks[i], want.Sinks[i]})
	}
	for _, s := range sections {
		if !reflect.DeepEqual(s.got, s.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", s.name, s.got, s.want)
		}
	}
}

func TestParseFull(t *testing.T) {
	path := filepath.Join("..", "testdata", "config", "full.yaml")
	got, err := parseFile(t, path)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	orders := Table{Schema: "public", Name: "orders"}
	want := &Config{
		Path: path,
		Source: Source{
			URL:            "postgres://walhook:hunter2-pg@localhost:5432/app?connect_timeout=45",
			Slot:           "walhook_app",
			Publication:    "walhook_app",
			Tables:         []Table{orders, {Schema: "public", Name: "customers"}, {Schema: "Sales", Name: "Order Items"}},
			ReceiveTimeout: 45 * time.Second,
			Heartbeat:      5 * time.Second,
			Failover:       true,
			Messages:       []string{"audit", "outbox"},
			Columns:        map[Table]Columns{{Schema: "public", Name: "customers"}: {Exclude: []string{"password_hash", "ssn"}}},
		},
		State:  State{Path: "/var/lib/walhook/walhook.state"},
		Server: Server{Listen: "0.0.0.0:9400", Token: "hunter2-token", ProtectMetrics: true},
		Log:    Log{Format: "json", Level: "debug"},
		Sinks: []Sink{
			{
				Name:        "orders",
				Type:        "webhook",
				Tables:      []Table{orders},
				Actions:     []string{"insert", "update", "delete", "truncate", "read"},
				Filter:      `record.status == "paid"`,
				GroupBy:     map[Table][]string{orders: {"customer_id"}},
				Columns:     map[Table]Columns{orders: {Include: []string{"id", "status", "customer_id"}}},
				BatchSize:   50,
				BatchWait:   10 * time.Millisecond,
				BatchBytes:  512 << 10,
				MaxInFlight: 4,
				BatchBy:     "message",
				Timeout:     10 * time.Second,
				Retry:       Retry{Initial: 2 * time.Second, Max: time.Minute, MaxAttempts: 10},
				Webhook: Webhook{
					URL:         "http://localhost:8080/hooks",
					Secrets:     []string{testSecret},
					Headers:     map[string]string{"Authorization": "Bearer hunter2-bearer"},
					Compression: "gzip",
				},
				Window:       Window{Messages: 5000, Bytes: 16 << 20},
				Backlog:      Backlog{MaxSize: 256 << 20, WhenFull: "dead_letter"},
				FilterErrors: "dead_letter",
				Backfill:     Backfill{OnCreate: true},
			},
			{
				Name:        "audit.log",
				Type:        "webhook",
				Actions:     []string{"message"},
				BatchSize:   100,
				BatchWait:   50 * time.Millisecond,
				BatchBytes:  1 << 20,
				MaxInFlight: 16,
				BatchBy:     "message",
				Timeout:     30 * time.Second,
				Retry:       Retry{Initial: time.Second, Max: 5 * time.Minute},
				Webhook: Webhook{
					URL:     "https://audit.example.com/in?source=walhook",
					Secrets: []string{"whsec_bmV3ZXIgc2VjcmV0", testSecret},
					TLS: TLS{
						CAFile:   filepath.Join("..", "testdata", "config", "tls", "ca.pem"),
						CertFile: filepath.Join("..", "testdata", "config", "tls", "client.pem"),
						KeyFile:  filepath.Join("..", "testdata", "config", "tls", "client-key.pem"),
					},
				},
				Window:       Window{Messages: 10000, Bytes: 64 << 20},
				Backlog:      Backlog{MaxSize: 1 << 30, WhenFull: "block"},
				FilterErrors: "skip",
			},
		},
	}
	// The filter is the single-quoted scalar at line 27, column 13.
	if line, col := got.Sinks[0].FilterOrigin.At(1, 1); line != 27 || col != 14 {
		t.Errorf("filter starts at %d:%d, want 27:14", line, col)
	}
	got.Sinks[0].FilterOrigin = Origin{}
	assertConfig(t, got, want)
}

func TestParseDefaults(t *testing.T) {
	path := filepath.Join("..", "testdata", "config", "minimal.yaml")
	got, err := parseFile(t, path)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Path: path,
		Source: Source{
			URL:            "postgres://localhost/app?connect_timeout=30",
			Slot:           "walhook",
			Publication:    "walhook",
			ReceiveTimeout: 30 * time.Second,
			Heartbeat:      10 * time.Second,
		},
		State:  State{Path: "walhook.state"},
		Server: Server{Listen: "127.0.0.1:9400"},
		Log:    Log{Format: "auto", Level: "info"},
		Sinks: []Sink{{
			Name:         "all",
			Type:         "webhook",
			Webhook:      Webhook{URL: "http://localhost:8080/hooks"},
			BatchSize:    100,
			BatchWait:    50 * time.Millisecond,
			BatchBytes:   1 << 20,
			MaxInFlight:  16,
			BatchBy:      "message",
			Timeout:      30 * time.Second,
			Retry:        Retry{Initial: time.Second, Max: 5 * time.Minute},
			Window:       Window{Messages: 10000, Bytes: 64 << 20},
			Backlog:      Backlog{MaxSize: 1 << 30, WhenFull: "block"},
			FilterErrors: "skip",
		}},
	}
	assertConfig(t, got, want)
	if !got.Source.AllTables() {
		t.Errorf("Source.AllTables() = false, want true")
	}
}

func TestParseSpecialValues(t *testing.T) {
	const base = "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/}]\n"
	tests := []struct {
		name  string
		yaml  string
		check func(*Config) (got, want any)
	}{
		{
			name: "connect_timeout is receive_timeout in whole seconds, rounded up, on both URLs",
			yaml: "source: {url: 'postgres://localhost/app?sslmode=disable', primary_url: postgres://p/app, receive_timeout: 2500ms}\nsinks: [{name: a, url: http://localhost/}]\n",
			check: func(c *Config) (any, any) {
				return [2]string{c.Source.URL, c.Source.PrimaryURL}, [2]string{"postgres://localhost/app?sslmode=disable&connect_timeout=3", "postgres://p/app?connect_timeout=3"}
			},
		},
		{
			name:  "a connect_timeout in the URL is kept",
			yaml:  "source: {url: 'postgres://localhost/app?connect_timeout=0'}\nsinks: [{name: a, url: http://localhost/}]\n",
			check: func(c *Config) (any, any) { return c.Source.URL, "postgres://localhost/app?connect_timeout=0" },
		},
		{
			name:  "star means every table",
			yaml:  "source: {url: postgres://localhost/app, tables: ['*']}\nsinks: [{name: a, url: http://localhost/}]\n",
			check: func(c *Config) (any, any) { return c.Source.AllTables(), true },
		},
		{
			name: "max_lag is a duration, none by default",
			yaml: "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, max_lag: 15m}, {name: b, url: http://localhost/}]\n",
			check: func(c *Config) (any, any) {
				return [2]time.Duration{c.Sinks[0].MaxLag, c.Sinks[1].MaxLag}, [2]time.Duration{15 * time.Minute, 0}
			},
		},
		{
			name: "max_lag may be a size of WAL instead",
			yaml: "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, max_lag: 512MiB}, {name: b, url: http://localhost/, max_lag: '1000'}, {name: c, url: http://localhost/, max_lag: 0}]\n",
			check: func(c *Config) (any, any) {
				got := [][2]int64{}
				for _, s := range c.Sinks {
					got = append(got, [2]int64{int64(s.MaxLag), s.MaxLagBytes})
				}
				return got, [][2]int64{{0, 512 << 20}, {0, 1000}, {0, 0}}
			},
		},
		{
			name: "pause_after is a duration, never by default",
			yaml: "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, pause_after: 3s}, {name: b, url: http://localhost/}, {name: c, url: http://localhost/, pause_after: 0}]\n",
			check: func(c *Config) (any, any) {
				return [3]time.Duration{c.Sinks[0].PauseAfter, c.Sinks[1].PauseAfter, c.Sinks[2].PauseAfter}, [3]time.Duration{3 * time.Second, 0, 0}
			},
		},
		{
			name: "batch_by is message by default, or transaction",
			yaml: "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, batch_by: transaction}, {name: b, url: http://localhost/}]\n",
			check: func(c *Config) (any, any) {
				return [2]string{c.Sinks[0].BatchBy, c.Sinks[1].BatchBy}, [2]string{BatchByTransaction, BatchByMessage}
			},
		},
		{
			name:  "empty listen turns the server off",
			yaml:  base + "server: {listen: ''}\n",
			check: func(c *Config) (any, any) { return c.Server.Listen, "" },
		},
		{
			name:  "null listen takes the default",
			yaml:  base + "server: {listen: ~}\n",
			check: func(c *Config) (any, any) { return c.Server.Listen, "127.0.0.1:9400" },
		},
		{
			name:  "localhost needs no token",
			yaml:  base + "server: {listen: 'localhost:9400'}\n",
			check: func(c *Config) (any, any) { return c.Server.Token, "" },
		},
		{
			name:  "IPv6 loopback needs no token",
			yaml:  base + "server: {listen: '[::1]:9400'}\n",
			check: func(c *Config) (any, any) { return c.Server.Listen, "[::1]:9400" },
		},
		{
			name:  "protect_metrics is off by default",
			yaml:  base + "server: {token: t}\n",
			check: func(c *Config) (any, any) { return c.Server.ProtectMetrics, false },
		},
		{
			name:  "protect_metrics with a token",
			yaml:  base + "server: {token: t, protect_metrics: true}\n",
			check: func(c *Config) (any, any) { return c.Server.ProtectMetrics, true },
		},
		{
			name:  "protect_metrics from an environment variable",
			yaml:  base + "server: {token: t, protect_metrics: '${PROTECT:-TRUE}'}\n",
			check: func(c *Config) (any, any) { return c.Server.ProtectMetrics, true },
		},
		{
			name:  "protect_metrics false needs no token",
			yaml:  base + "server: {protect_metrics: false}\n",
			check: func(c *Config) (any, any) { return c.Server.ProtectMetrics, false },
		},
		{
			name:  "state url replaces the default path",
			yaml:  base + "state: {url: 'postgres://localhost/state'}\n",
			check: func(c *Config) (any, any) { return c.State, State{URL: "postgres://localhost/state"} },
		},
		{
			name:  "numbers in a string field keep their text",
			yaml:  "source: {url: postgres://localhost/app}\nsinks: [{name: 1.10, url: http://localhost/}]\n",
			check: func(c *Config) (any, any) { return c.Sinks[0].Name, "1.10" },
		},
		{
			name:  "one secret",
			yaml:  "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, secret: '${WEBHOOK_SECRET}'}]\n",
			check: func(c *Config) (any, any) { return c.Sinks[0].Webhook.Secrets, []string{testSecret} },
		},
		{
			name: "a list of secrets keeps its order",
			yaml: "source: {url: postgres://localhost/app}\nsinks:\n- name: a\n  url: http://localhost/\n" +
				"  secret:\n    - whsec_bmV3ZXN0\n    - ${WEBHOOK_SECRET}\n",
			check: func(c *Config) (any, any) { return c.Sinks[0].Webhook.Secrets, []string{"whsec_bmV3ZXN0", testSecret} },
		},
		{
			name:  "no secret, no signatures",
			yaml:  base,
			check: func(c *Config) (any, any) { return c.Sinks[0].Webhook.Secrets, []string(nil) },
		},
		{
			name:  "compression gzip",
			yaml:  "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, compression: gzip}]\n",
			check: func(c *Config) (any, any) { return c.Sinks[0].Webhook.Compression, "gzip" },
		},
		{
			name:  "compression none is the default",
			yaml:  "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, compression: none}]\n",
			check: func(c *Config) (any, any) { return c.Sinks[0].Webhook.Compression, "" },
		},
		{
			name:  "no tls",
			yaml:  base,
			check: func(c *Config) (any, any) { return c.Sinks[0].Webhook.TLS, TLS{} },
		},
		{
			name:  "tls insecure_skip_verify",
			yaml:  "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: https://localhost/, tls: {insecure_skip_verify: true}}]\n",
			check: func(c *Config) (any, any) { return c.Sinks[0].Webhook.TLS, TLS{InsecureSkipVerify: true} },
		},
		{
			name:  "batch_wait may be zero",
			yaml:  "source: {url: postgres://localhost/app}\nsinks: [{name: a, url: http://localhost/, batch_wait: 0s}]\n",
			check: func(c *Config) (any, any) { return c.Sinks[0].BatchWait, time.Duration(0) },
		},
		{
			name: "columns: quoted table names, names as written",
			yaml: "source: {url: postgres://localhost/app, tables: ['\"Users\"']}\n" +
				"sinks: [{name: a, url: http://localhost/, columns: {'\"Users\"': {include: [id, Email]}}}]\n",
			check: func(c *Config) (any, any) {
				return c.Sinks[0].Columns, map[Table]Columns{{Schema: "public", Name: "Users"}: {Include: []string{"id", "Email"}}}
			},
		},
		{
			name: "columns may keep a group_by column",
			yaml: "source: {url: postgres://localhost/app, tables: [orders], columns: {orders: {exclude: [note]}}}\n" +
				"sinks: [{name: a, url: http://localhost/, group_by: {orders: [customer_id]}, columns: {orders: {include: [id, customer_id]}}}]\n",
			check: func(c *Config) (any, any) {
				return c.Source.Columns[Table{Schema: "public", Name: "orders"}].Keeps("customer_id") &&
					c.Sinks[0].Columns[Table{Schema: "public", Name: "orders"}].Keeps("customer_id"), true
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, want := tt.check(mustParse(t, tt.yaml))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

// TestTLSPaths: a relative tls path starts at the configuration file's
// directory, wherever walhook runs; an absolute one is kept.
func TestTLSPaths(t *testing.T) {
	dir := filepath.Join("..", "testdata", "config")
	abs, err := filepath.Abs(filepath.Join(dir, "tls", "client.pem"))
	if err != nil {
		t.Fatal(err)
	}
	yaml := "source: {url: postgres://localhost/app}\nsinks:\n- name: a\n  url: https://localhost/\n" +
		"  tls: {ca_file: tls/ca.pem, cert_file: '" + abs + "', key_file: ./tls/client-key.pem}\n"
	c, err := Parse(filepath.Join(dir, "walhook.yaml"), []byte(yaml), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := TLS{
		CAFile:   filepath.Join(dir, "tls", "ca.pem"),
		CertFile: abs,
		KeyFile:  filepath.Join(dir, "tls", "client-key.pem"),
	}
	if got := c.Sinks[0].Webhook.TLS; got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// The same file read from another directory finds nothing there.
	if _, err := Parse("walhook.yaml", []byte(yaml), nil); err == nil || !strings.Contains(err.Error(), "tls.ca_file: cannot read") {
		t.Errorf("Parse relative to the package directory: got %v, want tls.ca_file: cannot read", err)
	}
}

func TestParseAnchorsAndMerge(t *testing.T) {
	c := mustParse(t, `
source:
  url: postgres://localhost/app
sinks:
  - &defaults
    name: a
    url: http://localhost/a
    timeout: 5s
    retry: &retry {initial: 2s, max: 1m}
  - <<: *defaults
    name: b
  - name: c
    url: http://localhost/c
    retry: *retry
`)
	b := c.Sinks[1]
	if b.Name != "b" || b.Webhook.URL != "http://localhost/a" || b.Timeout != 5*time.Second {
		t.Errorf("merged sink: got name %q, url %q, timeout %v; want b, http://localhost/a, 5s", b.Name, b.Webhook.URL, b.Timeout)
	}
	want := Retry{Initial: 2 * time.Second, Max: time.Minute}
	for i, s := range c.Sinks {
		if !reflect.DeepEqual(s.Retry, want) {
			t.Errorf("sinks[%d].Retry: got %+v, want %+v", i, s.Retry, want)
		}
	}
}

func TestParseEnv(t *testing.T) {
	c := mustParse(t, `
source:
  url: postgres://walhook:${PGPASSWORD}@${PGHOST:-localhost}:5432/app
sinks:
  - name: ${SINK_NAME:-orders}
    url: http://localhost/
    batch_size: ${BATCH_SIZE:-25}
    timeout: ${TIMEOUT:-7s}
    headers: {X-Token: "${EMPTY:-fallback}", X-Empty: "${EMPTY}"}
`)
	s := c.Sinks[0]
	tests := []struct {
		name      string
		got, want any
	}{
		{"source.url", c.Source.URL, "postgres://walhook:hunter2-pg@localhost:5432/app?connect_timeout=30"},
		{"name", s.Name, "orders"},
		{"batch_size", s.BatchSize, 25},
		{"timeout", s.Timeout, 7 * time.Second},
		{"header with default", s.Webhook.Headers["X-Token"], "fallback"},
		{"empty header", s.Webhook.Headers["X-Empty"], ""},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y", "EMPTY": ""}
	tests := []struct {
		in, want string
		wantErr  string
	}{
		{in: "plain", want: "plain"},
		{in: "${A}", want: "x"},
		{in: "a${A}b${B}c", want: "axbyc"},
		{in: "${UNSET:-def}", want: "def"},
		{in: "${EMPTY:-def}", want: "def"},
		{in: "${A:-def}", want: "x"},
		{in: "${EMPTY}", want: ""},
		{in: "${UNSET:-}", want: ""},
		{in: "${UNSET:-a:-b}", want: "a:-b"},
		{in: "$A and $HOME", want: "$A and $HOME"},
		{in: "pa$$word$", want: "pa$$word$"},
		{in: "$${A}", want: "${A}"},
		{in: "${UNSET}", wantErr: "environment variable UNSET is not set"},
		{in: "${A", wantErr: "malformed ${...} reference"},
		{in: "${}", wantErr: "malformed ${...} reference"},
		{in: "${1A}", wantErr: "malformed ${...} reference"},
		{in: "${A-def}", wantErr: "malformed ${...} reference"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, lookup(vars))
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("expand(%q): got error %v, want %q", tt.in, err, tt.wantErr)
		case tt.wantErr == "" && err != nil:
			t.Errorf("expand(%q): got error %v, want %q", tt.in, err, tt.want)
		case got != tt.want:
			t.Errorf("expand(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseTable(t *testing.T) {
	tests := []struct {
		in         string
		want       Table
		wantQuoted string
		wantErr    string
	}{
		{in: "orders", want: Table{"public", "orders"}, wantQuoted: `"public"."orders"`},
		{in: "public.orders", want: Table{"public", "orders"}, wantQuoted: `"public"."orders"`},
		{in: "Sales.Orders", want: Table{"sales", "orders"}, wantQuoted: `"sales"."orders"`},
		{in: `"Sales"."Order Items"`, want: Table{"Sales", "Order Items"}, wantQuoted: `"Sales"."Order Items"`},
		{in: `"a""b".c`, want: Table{`a"b`, "c"}, wantQuoted: `"a""b"."c"`},
		{in: `"a.b"`, want: Table{"public", "a.b"}, wantQuoted: `"public"."a.b"`},
		{in: "_t$1", want: Table{"public", "_t$1"}, wantQuoted: `"public"."_t$1"`},
		{in: "Straße", want: Table{"public", "straße"}, wantQuoted: `"public"."straße"`},
		{in: "", wantErr: "missing identifier"},
		{in: "public.", wantErr: "missing identifier"},
		{in: ".orders", wantErr: `unexpected '.'`},
		{in: "a.b.c", wantErr: "3 dotted parts"},
		{in: "1orders", wantErr: `unexpected '1'`},
		{in: "order items", wantErr: `unexpected ' ' after order`},
		{in: `"orders`, wantErr: "missing closing double quote"},
		{in: `""`, wantErr: "empty quoted identifier"},
		{in: `"a"b`, wantErr: `unexpected 'b' after "a"`},
		{in: strings.Repeat("x", 64), wantErr: "longer than 63 bytes"},
	}
	for _, tt := range tests {
		got, err := ParseTable(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseTable(%q): got error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTable(%q): got error %v, want %v", tt.in, err, tt.want)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseTable(%q): got %#v, want %#v", tt.in, got, tt.want)
		}
		if q := got.Quoted(); q != tt.wantQuoted {
			t.Errorf("ParseTable(%q).Quoted(): got %s, want %s", tt.in, q, tt.wantQuoted)
		}
	}
}

// TestBadConfigs parses every file in testdata/config/bad. Each file starts
// with one "# want: " line per problem it must produce, in line order; the
// file must produce exactly those problems.
func TestBadConfigs(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "testdata", "config", "bad", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 10 {
		t.Fatalf("got %d bad configs, want at least 10", len(paths))
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			wants := wantComments(t, path)
			_, err := parseFile(t, path)
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got error %v, want *Errors", err)
			}
			msgs := make([]string, len(errs.Problems))
			for i, p := range errs.Problems {
				msgs[i] = p.String()
			}
			if len(msgs) != len(wants) {
				t.Errorf("got %d problems, want %d:\n%s", len(msgs), len(wants), err)
			}
			for i := range min(len(msgs), len(wants)) {
				if !strings.Contains(msgs[i], wants[i]) {
					t.Errorf("problem %d:\n got %s\nwant substring %s", i, msgs[i], wants[i])
				}
			}
			if !slices.IsSortedFunc(errs.Problems, func(a, b Problem) int { return a.Line - b.Line }) {
				t.Errorf("problems not sorted by line:\n%s", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a secret:\n%s", err)
			}
		})
	}
}

// wantComments returns the "# want: " lines at the top of a file.
func wantComments(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var wants []string
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		want, ok := strings.CutPrefix(scanner.Text(), "# want: ")
		if !ok {
			break
		}
		wants = append(wants, want)
	}
	if len(wants) == 0 {
		t.Fatalf("%s: no # want: line at the top", path)
	}
	return wants
}

func TestErrorsHideSecrets(t *testing.T) {
	const yaml = `
source:
  url: postgres://walhook:hunter2/x@localhost/app
state:
  url: "postgres://walhook:hunter2@local host/state"
server:
  listen: 0.0.0.0:9400
  token: ${UNSET_TOKEN}
sinks:
  - name: a
    url: "http://user:hunter2@[::1/hooks"
    secret: whsec_hunter2
    headers: {Authorization: "Bearer hunter2\nInjected: yes"}
  - name: b
    url: http://localhost/
    secret: "${WEBHOOK_SECRET}x"
  - name: c
    url: http://localhost/
    secret: ${hunter2
`
	_, err := Parse("test.yaml", []byte(yaml), lookup(map[string]string{"WEBHOOK_SECRET": "hunter2"}))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got error %v, want *Errors", err)
	}
	if len(errs.Problems) != 8 {
		t.Errorf("got %d problems, want 8:\n%s", len(errs.Problems), err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows a secret:\n%s", err)
	}
}

func TestLoad(t *testing.T) {
	for name, value := range testEnv {
		t.Setenv(name, value)
	}
	path := filepath.Join("..", "testdata", "config", "full.yaml")
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := c.Server.Token, testEnv["WALHOOK_TOKEN"]; got != want {
		t.Errorf("Server.Token: got %q, want %q", got, want)
	}

	_, err = Load(filepath.Join("..", "testdata", "config", "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: got error %v, want fs.ErrNotExist", err)
	}
}

func TestColumnsKeeps(t *testing.T) {
	include := Columns{Include: []string{"id", "email"}}
	exclude := Columns{Exclude: []string{"password_hash"}}
	tests := []struct {
		sel    Columns
		column string
		want   bool
	}{
		{include, "id", true},
		{include, "password_hash", false},
		{include, "ID", false}, // names are keys of the record: case counts
		{exclude, "id", true},
		{exclude, "password_hash", false},
	}
	for _, tt := range tests {
		if got := tt.sel.Keeps(tt.column); got != tt.want {
			t.Errorf("%+v.Keeps(%q): got %t, want %t", tt.sel, tt.column, got, tt.want)
		}
	}
}
