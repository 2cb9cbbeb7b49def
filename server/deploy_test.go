package server_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/admintest"
	"github.com/walhook/walhook/server"
)

const (
	dashboardFile = "../deploy/grafana/walhook.json"
	alertsFile    = "../deploy/prometheus/alerts.yaml"
)

// everyMetric is a snapshot in which every walhook metric has a value.
type everyMetric struct{}

func (everyMetric) Snapshot() server.Snapshot {
	return server.Snapshot{
		Received: 10, ReplicationLagBytes: 1, LagKnown: true, LastHeartbeat: time.Now(), BackfillsRunning: 1,
		Sinks: []server.SinkSnapshot{{Name: "orders", Delivered: 9, Attempts: 3, FailedAttempts: 1, DeadLettered: 1,
			Durations: []uint64{1, 2, 0}, DurationBuckets: []float64{0.1, 1}, DurationSum: 1.5, LagBytes: 1, LagSeconds: 1, DeadLetters: 1, BacklogBytes: 1, Paused: true}},
		Backfills: []server.BackfillSnapshot{{Sink: "orders", Table: "public.orders", Rows: 5}},
	}
}

// exportedMetrics are the names of the series a real admin server's
// /metrics serves, histograms and summaries with their _bucket, _sum and
// _count series.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(server.NewCollector(everyMetric{}))
	opts := admintest.NewFake().Options()
	opts.Metrics = reg
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0"}, opts))
	a := call(t, addr, "GET", "/metrics", "", "")
	if a.status != 200 {
		t.Fatalf("/metrics: got %d", a.status)
	}
	names := map[string]bool{}
	for line := range strings.SplitSeq(string(a.body), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		names[f[2]] = true
		switch f[3] {
		case "histogram":
			names[f[2]+"_bucket"], names[f[2]+"_sum"], names[f[2]+"_count"] = true, true, true
		case "summary":
			names[f[2]+"_sum"], names[f[2]+"_count"] = true, true
		}
	}
	if !names["walhook_active"] || !names["walhook_delivery_duration_seconds_bucket"] {
		t.Fatalf("/metrics lacks walhook's metrics:\n%s", a.body)
	}
	return names
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promVar      = regexp.MustCompile(`\$\{?\w+\}?`)
	promNumber   = regexp.MustCompile(`\b\d[\d.]*(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*\b`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	labelValues  = regexp.MustCompile(`^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)`)
)

// promKeywords are PromQL's words that are neither metrics nor functions.
var promKeywords = []string{"and", "or", "unless", "bool", "offset", "inf", "nan", "e"}

// prometheusOwn are series Prometheus makes itself, which rules may name.
var prometheusOwn = []string{"up"}

// metricNames returns the metric names a PromQL expression selects: what
// is left once strings, label matchers, ranges, grouping clauses,
// dashboard variables, functions, keywords and numbers are taken out.
func metricNames(expr string) []string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		return []string{m[1]}
	}
	for _, re := range []*regexp.Regexp{promString, promMatchers, promRange, promGrouping, promVar, promNumber} {
		expr = re.ReplaceAllString(expr, " ")
	}
	var out []string
	for _, m := range promIdent.FindAllStringSubmatch(expr, -1) {
		name := strings.TrimSpace(m[0])
		if m[1] != "" || slices.Contains(promKeywords, strings.ToLower(name)) {
			continue // a function call or a keyword
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNamesOfQueries(t *testing.T) {
	for _, tt := range []struct {
		expr string
		want []string
	}{
		{`sum by (sink, le) (rate(walhook_x_bucket{sink=~"$sink", job="a{b}"}[$__rate_interval]))`, []string{"walhook_x_bucket"}},
		{`(time() - walhook_hb > 120) and on (job, instance) walhook_active == 1`, []string{"walhook_hb", "walhook_active"}},
		{`walhook_a > 1e9 unless walhook_b offset 5m`, []string{"walhook_a", "walhook_b"}},
		{`label_values(walhook_active{job=~"$job"}, instance)`, []string{"walhook_active"}},
	} {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%s): got %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// dashboardQueries are the PromQL expressions of a Grafana dashboard: its
// panels' targets and its query variables.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("%s: no title or no panels", dashboardFile)
	}
	exprs := map[string]string{}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, p.Title)
		}
		for i, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: panel %q, target %d has no expr", dashboardFile, p.Title, i)
			}
			exprs["panel "+p.Title+", target "+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query)
		}
		exprs["variable "+v.Name] = q.Query
	}
	return exprs
}

// alertRules are the alerting rules' expressions by alert name.
func alertRules(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	exprs := map[string]string{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: rule %q needs alert, expr and a summary", alertsFile, r.Alert)
			}
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	return exprs
}

// TestDashboardAndAlertsNameRealMetrics: every expression of the Grafana
// dashboard and of the alerting rules selects only metrics that a real
// admin server's /metrics serves (or Prometheus' own up), and at least one
// of walhook's.
func TestDashboardAndAlertsNameRealMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	exprs := dashboardQueries(t)
	rules := alertRules(t)
	for _, want := range []string{"WalhookSlotLag", "WalhookHeartbeatStale", "WalhookSinkFailing", "WalhookSinkPaused", "WalhookDeadLettersGrowing", "WalhookNoActiveInstance"} {
		if rules["alert "+want] == "" {
			t.Errorf("%s: no alert %s", alertsFile, want)
		}
	}
	for k, v := range rules {
		exprs[k] = v
	}
	for where, expr := range exprs {
		names := metricNames(expr)
		walhook := 0
		for _, n := range names {
			switch {
			case exported[n]:
				if strings.HasPrefix(n, "walhook_") {
					walhook++
				}
			case slices.Contains(prometheusOwn, n):
			default:
				t.Errorf("%s: %q names %s, which walhook does not export", where, expr, n)
			}
		}
		if walhook == 0 && !slices.Contains(names, "up") {
			t.Errorf("%s: %q names none of walhook's metrics", where, expr)
		}
	}
}

// TestAlertRulesPromtool checks the rules with Prometheus' own promtool
// (Debian's package prometheus; make test installs it). Without it the
// test is skipped, except in CI, where it fails.
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is missing: make test installs the Debian package prometheus")
		}
		t.Skip("promtool is missing: install the Debian package prometheus (make test does)")
	}
	out, err := exec.Command(promtool, "check", "rules", alertsFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
}
