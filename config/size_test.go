package config

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true},
		{"1MiB", 1 << 20, true},
		{"64 MiB", 64 << 20, true},
		{"500KB", 500_000, true},
		{"1GiB", 1 << 30, true},
		{"2GB", 2e9, true},
		{"10B", 10, true},
		{"1.5MiB", 0, false},
		{"-1", 0, false},
		{"MiB", 0, false},
		{"1 mib", 0, false},
		{"9999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q): got %d, %v; want %d, ok %t", tt.in, got, err, tt.want, tt.ok)
		}
	}
	for _, n := range []int64{1, 1000, 1 << 10, 64 << 20, 3 << 30, 1500} {
		if back, err := ParseSize(FormatSize(n)); err != nil || back != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q): got %d, %v", n, FormatSize(n), back, err)
		}
	}
}
