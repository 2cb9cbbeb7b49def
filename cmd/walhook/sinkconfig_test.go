package main

import (
	"strings"
	"testing"
	"time"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/redact"
)

func TestSinkSettings(t *testing.T) {
	t.Parallel()
	sc := config.Sink{Name: "orders", Type: "webhook",
		Tables: []config.Table{{Schema: "public", Name: "orders"}}, BatchWait: 50 * time.Millisecond, MaxInFlight: 16,
		Retry: config.Retry{Initial: time.Second, MaxAttempts: 5},
		Webhook: config.Webhook{URL: "https://user:pa55word-x@hooks.example/in?token=tok-123456",
			Secrets: []string{"whsec_bmV3LXNlY3JldC12YWx1ZQ==", "whsec_b2xkLXNlY3JldA=="}, Headers: map[string]string{"Authorization": "Bearer hdr-cred-42"},
			TLS: config.TLS{CAFile: "/etc/ca.pem"}},
		NATS: config.NATS{Subject: "not.shown"}}
	cfg := &config.Config{Sinks: []config.Sink{sc}}
	got := map[string]string{}
	for _, s := range sinkSettings(sc, redact.ForConfig(cfg)) {
		got[s.Key] = s.Value
	}
	for key, want := range map[string]string{
		"type": "webhook", "tables": "public.orders", "batch_wait": "50ms", "max_in_flight": "16", "retry.initial": "1s",
		"retry.max_attempts": "5", "tls.ca_file": "/etc/ca.pem", "secrets[0]": redact.Mask, "secrets[1]": redact.Mask,
		"headers[Authorization]": redact.Mask, "url": "https://user:" + redact.Mask + "@hooks.example/in?token=" + redact.Mask,
	} {
		if got[key] != want {
			t.Errorf("%s: got %q, want %q", key, got[key], want)
		}
	}
	if _, ok := got["subject"]; ok {
		t.Errorf("a key of another type (nats' subject) is shown")
	}
	if _, ok := got["name"]; ok {
		t.Errorf("name is shown as a setting")
	}
	if _, ok := got["filter_origin"]; ok {
		t.Errorf("filter_origin (where the filter was written) is shown as a setting")
	}
	for k, v := range got {
		for _, secret := range []string{"pa55word", "tok-123456", "bmV3LXNl", "b2xkLXNl", "hdr-cred"} {
			if strings.Contains(v, secret) {
				t.Errorf("%s shows a secret: %q", k, v)
			}
		}
	}
}
