// Package pgvalue turns PostgreSQL values in their text form into walhook's
// JSON, and rows into their ordering keys, without a connection of its own:
// the replication decoder and the backfill share it, so a value is written
// the same whether it was streamed or read by a query, and a row has the
// same key either way. Types reads user types (enums, domains, composites)
// through a query the caller supplies.
//
// The text forms it parses are those of a session with DateStyle=ISO, MDY,
// IntervalStyle=postgres, TimeZone=UTC, extra_float_digits=3,
// bytea_output=hex and lc_monetary=C; SessionSettings lists them for a
// connection to set.
package pgvalue

// SessionSettings are the run-time parameters the encoders rely on.
var SessionSettings = map[string]string{
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"TimeZone":           "UTC",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"lc_monetary":        "C",
}
