package redact

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/walhook/walhook/config"
)

func TestForConfigMasksEverySecret(t *testing.T) {
	cfg := &config.Config{
		Source: config.Source{URL: "postgres://walhook:pa%24%24word@db:5432/app?sslmode=require"},
		State:  config.State{URL: "postgres://st:st4te-pw@db/state"},
		Server: config.Server{Token: "admin-t0ken"},
		Sinks: []config.Sink{{
			Webhook: config.Webhook{
				URL:     "https://hooks.example.com/in?token=url-t0ken&x=1",
				Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
				Headers: map[string]string{"Authorization": "Bearer hdr-t0ken"},
			},
		}, {
			Type: "nats",
			NATS: config.NATS{URL: "nats://n:nats-pw@a:4222,nats://n:nats-pw2@b:4222"},
		}, {
			Type:  "kafka",
			Kafka: config.Kafka{SASL: config.SASL{Mechanism: "PLAIN", Username: "k", Password: "kafka-pw"}},
		}, {
			Type:  "redis",
			Redis: config.Redis{URL: "redis://:redis-pw@r:6379/0"},
		}, {
			Type:     "rabbitmq",
			RabbitMQ: config.RabbitMQ{URL: "amqp://guest:amqp-pw@q:5672/"},
		}},
	}
	r := ForConfig(cfg)
	for _, secret := range []string{"pa$$word", "pa%24%24word", "st4te-pw", "admin-t0ken", "url-t0ken", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "hdr-t0ken",
		"nats-pw", "nats-pw2", "kafka-pw", "redis-pw", "amqp-pw"} {
		if got := r.String("before " + secret + " after"); strings.Contains(got, secret) || !strings.Contains(got, Mask) {
			t.Errorf("String with %q: got %q", secret, got)
		}
	}
	if got := r.String("sslmode=require x=1 db:5432"); got != "sslmode=require x=1 db:5432" {
		t.Errorf("String masked what is no secret: %q", got)
	}
}

func TestHandlerMasksRecords(t *testing.T) {
	var buf bytes.Buffer
	r := New("s3cret-value")
	log := slog.New(r.Handler(slog.NewJSONHandler(&buf, nil))).With("conn", "user:s3cret-value@host")
	err := errors.New("auth failed for s3cret-value")
	log.Info("message with s3cret-value", "err", err, "n", 3, slog.Group("g", "k", "s3cret-value"))
	if strings.Contains(buf.String(), "s3cret-value") || strings.Count(buf.String(), Mask) != 4 {
		t.Fatalf("log: %s", buf.String())
	}
	wrapped := r.Error(err)
	if strings.Contains(wrapped.Error(), "s3cret-value") || !errors.Is(wrapped, err) {
		t.Fatalf("Error: got %q (unwraps to the original: %t)", wrapped, errors.Is(wrapped, err))
	}
}
