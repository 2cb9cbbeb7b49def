package pgtest

import (
	"os"
	"strings"
)

// LogTail returns the last n lines of the server log (all of it when n <= 0),
// for a test to print when it fails. It is empty for an external server and
// after Close.
func (s *Server) LogTail(n int) string {
	if s.externalDSN != "" {
		return ""
	}
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	text := strings.TrimRight(string(data), "\n")
	if n <= 0 {
		return text
	}
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logSize returns the size of the server log, 0 if there is none yet.
func (s *Server) logSize() int64 {
	fi, err := os.Stat(s.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns what the server logged from offset on, at most the last
// 40 lines of it.
func (s *Server) logSince(offset int64) string {
	data, err := os.ReadFile(s.logPath)
	if err != nil || offset > int64(len(data)) {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data[offset:]), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
