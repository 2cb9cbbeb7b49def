package server

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// consoleFuncs format numbers the way console.js formats them when it
// refreshes them, so that a page reads the same before and after.
var consoleFuncs = template.FuncMap{
	"bytes":        formatBytes,
	"num":          num,
	"rate":         formatRate,
	"secs":         formatSecs,
	"time":         formatTime,
	"eta":          func(b Backfill) string { return formatETA(eta(b)) },
	"pct":          percent,
	"add":          func(a, b int) int { return a + b },
	"deref":        func(f *float64) float64 { return *f },
	"backfillRows": func(b []Backfill, csrf string) backfillRows { return backfillRows{Backfills: b, CSRF: csrf} },
}

// backfillRows is what the "backfills" table template gets: the rows, and
// the CSRF token for their cancel buttons.
type backfillRows struct {
	Backfills []Backfill
	CSRF      string
}

// num formats any integer as formatNum does.
func num(v any) string {
	switch n := v.(type) {
	case int:
		return formatNum(int64(n))
	case int64:
		return formatNum(n)
	case uint64:
		return formatNum(int64(min(n, math.MaxInt64)))
	}
	return fmt.Sprint(v)
}

// formatBytes is n in IEC units: 0 B, 512 B, 1.5 KiB, 20.0 MiB.
func formatBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := -1
	for f >= 1024 && i+1 < len(units) {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + units[i]
}

// formatNum is n with thousands separated by commas.
func formatNum(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// formatRate is a per-second rate with one decimal.
func formatRate(f float64) string {
	return strconv.FormatFloat(f, 'f', 1, 64) + "/s"
}

// formatSecs is a duration in seconds as 0.4 s, 42 s, 3m 20s, 5h 02m.
func formatSecs(f float64) string {
	switch {
	case f < 10:
		return strconv.FormatFloat(f, 'f', 1, 64) + " s"
	case f < 60:
		return strconv.FormatFloat(math.Floor(f), 'f', 0, 64) + " s"
	case f < 3600:
		return fmt.Sprintf("%dm %02ds", int(f)/60, int(f)%60)
	}
	return fmt.Sprintf("%dh %02dm", int(f)/3600, int(f)%3600/60)
}

// formatETA is a backfill's remaining time, or "–" when unknown.
func formatETA(d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	return formatSecs(d.Seconds())
}

// formatTime is t in UTC to the second; "–" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// percent is done of total as a whole percentage, at most 100.
func percent(done, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return min(done*100/total, 100)
}
