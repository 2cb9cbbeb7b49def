package pgtest

import "testing"

// Run is [Main] without the exit: it returns the status, so that a TestMain
// can clean up what it set up around the tests.
func Run(m *testing.M) int { return runMain(m) }
