package webhooktest

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestDecodeBatch: a body's messages decode as unmarshalling the data array
// and then each message did, each with its own bytes as Raw, whatever
// other keys and spacing the body has; a body that is not one object with
// a data array of messages is an error.
func TestDecodeBatch(t *testing.T) {
	m1 := `{"action":"insert","record":{"id":1,"v":"a, b"},"changes":null,"metadata":{"table_schema":"public","table_name":"t","commit_lsn":"0/16B3748","commit_idx":0,"idempotency_key":"0/16B3748:0","sink":"s"}}`
	m2 := `{"action":"delete","record":{"id":2},"metadata":{"table_name":"t","unchanged_toast_columns":["big"]}}`
	for _, body := range []string{
		`{"data":[` + m1 + `,` + m2 + `]}`,
		"{ \"transaction\": {\"xid\": 7}, \"data\" : [\n  " + m1 + " ,\n\t" + m2 + "\n] }\n",
	} {
		got, err := decodeBatch([]byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		var want []Message
		for _, raw := range []string{m1, m2} {
			var m Message
			if err := json.Unmarshal([]byte(raw), &m); err != nil {
				t.Fatal(err)
			}
			m.Raw = json.RawMessage(raw)
			want = append(want, m)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", body, got, want)
		}
	}
	if got, err := decodeBatch([]byte(`{"data":[]}`)); err != nil || len(got) != 0 {
		t.Errorf("an empty batch: got %v, %v; want no messages", got, err)
	}
	for _, body := range []string{``, `[]`, `{"data":{}}`, `{"data":[` + m1 + `]`, `{"data":[` + m1 + `]}{}`, `{"data":[{"action":1}]}`, `{"data":[` + m1 + `,]}`} {
		if _, err := decodeBatch([]byte(body)); err == nil {
			t.Errorf("%q: no error, want one", body)
		}
	}
}
