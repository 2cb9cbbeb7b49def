package config

import (
	"fmt"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes a size may have; KB, MB and GB are powers of
// 1000, KiB, MiB and GiB of 1024.
var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseSize reads a size in bytes: digits, optionally followed by B, KB,
// MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), such
// as 1MiB or 500KB. A space before the unit is allowed.
func ParseSize(s string) (int64, error) {
	num, factor := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size; write bytes or a number and a unit, such as 1MiB or 500KB", s)
	}
	if n > 0 && factor > (1<<62)/n {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * factor, nil
}

// FormatSize writes n the way ParseSize reads it, in the largest binary
// unit that divides it.
func FormatSize(n int64) string {
	for i := 3; i >= 0; i-- {
		u := sizeUnits[i]
		if n >= u.factor && n%u.factor == 0 {
			return strconv.FormatInt(n/u.factor, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// size returns a positive size in bytes, or def when v is absent or
// invalid.
func (d *decoder) size(v value, def int64) int64 {
	s, ok := d.text(v)
	if !ok {
		return def
	}
	n, err := ParseSize(s)
	if err != nil {
		d.fail(v, "%v", err)
		return def
	}
	d.check(v, n > 0, "must be more than 0; use a size such as %s", FormatSize(def))
	return n
}
