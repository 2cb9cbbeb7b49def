package factory

import (
	"errors"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/sink/webhook"
)

func TestNewByType(t *testing.T) {
	sc := config.Sink{Name: "s", Type: "webhook", Timeout: time.Second, MaxInFlight: 1,
		Webhook: config.Webhook{URL: "http://127.0.0.1:1/hooks"}}
	d, err := New(sc, Options{})
	if err != nil {
		t.Fatalf("New webhook: %v", err)
	}
	defer d.Close()
	if _, ok := d.(*webhook.Sink); !ok {
		t.Errorf("New webhook: got %T, want *webhook.Sink", d)
	}
	sc.Type = "carrier-pigeon"
	_, err = New(sc, Options{})
	var ute *UnknownTypeError
	if !errors.As(err, &ute) || ute.Type != "carrier-pigeon" {
		t.Errorf("New carrier-pigeon: got %v, want an *UnknownTypeError", err)
	}
}

func TestNewBrokerTypes(t *testing.T) {
	base := config.Sink{Name: "s", Timeout: time.Second, MaxInFlight: 1}
	k := base
	k.Type, k.Kafka = "kafka", config.Kafka{Brokers: []string{"127.0.0.1:1"}, Topic: "walhook.{table}"}
	r := base
	r.Type, r.RabbitMQ = "rabbitmq", config.RabbitMQ{URL: "amqp://127.0.0.1:1/", Exchange: "x", RoutingKey: "{table}"}
	for _, sc := range []config.Sink{k, r} {
		d, err := New(sc, Options{})
		if err != nil {
			t.Fatalf("New %s: %v", sc.Type, err)
		}
		d.Close()
	}
}
