//go:build !race

package pgvalue

const raceEnabled = false
