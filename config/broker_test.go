package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestParseBrokerSinks reads a sink of every broker type: each gets its own
// part and nothing of the others', the common keys as for webhooks.
func TestParseBrokerSinks(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "user.creds")
	if err := os.WriteFile(creds, []byte("creds"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, `
source: {url: postgres://localhost/app}
sinks:
  - name: n
    type: nats
    url: nats://a:4222, nats://b:4222
    subject: "walhook.{schema}.{table}"
    creds_file: `+creds+`
    batch_size: 7
  - name: k
    type: kafka
    brokers: [127.0.0.1:9092, "k2:9093"]
    topic: "walhook.{schema}.{table}"
    sasl: {mechanism: SCRAM-SHA-512, username: u, password: "${TOKEN}"}
    tls: {}
  - name: r
    type: redis
    url: redis://127.0.0.1:6379/0
    stream: "walhook:{schema}.{table}"
    max_len: 1000
  - name: q
    type: rabbitmq
    url: amqp://guest:guest@127.0.0.1:5672/
    exchange: walhook
    routing_key: "{schema}.{table}.{action}"
`)
	tests := []struct {
		name      string
		got, want any
	}{
		{"nats", c.Sinks[0].NATS, NATS{URL: "nats://a:4222, nats://b:4222", Subject: "walhook.{schema}.{table}", CredsFile: creds}},
		{"nats batch_size", c.Sinks[0].BatchSize, 7},
		{"nats webhook part", c.Sinks[0].Webhook, Webhook{}},
		{"kafka", c.Sinks[1].Kafka, Kafka{Brokers: []string{"127.0.0.1:9092", "k2:9093"}, Topic: "walhook.{schema}.{table}",
			SASL: SASL{Mechanism: "SCRAM-SHA-512", Username: "u", Password: "hunter2-bearer"}, TLSSet: true}},
		{"redis", c.Sinks[2].Redis, Redis{URL: "redis://127.0.0.1:6379/0", Stream: "walhook:{schema}.{table}", MaxLen: 1000}},
		{"rabbitmq", c.Sinks[3].RabbitMQ, RabbitMQ{URL: "amqp://guest:guest@127.0.0.1:5672/", Exchange: "walhook", RoutingKey: "{schema}.{table}.{action}"}},
		{"types", []string{c.Sinks[0].Type, c.Sinks[1].Type, c.Sinks[2].Type, c.Sinks[3].Type}, []string{"nats", "kafka", "redis", "rabbitmq"}},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, tc.got, tc.want)
		}
	}
}
