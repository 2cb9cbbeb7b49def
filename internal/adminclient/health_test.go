package adminclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"

	"github.com/walhook/walhook/config"
	"github.com/walhook/walhook/internal/adminclient"
	"github.com/walhook/walhook/internal/admintest"
	"github.com/walhook/walhook/server"
)

func TestHealth(t *testing.T) {
	ctx := context.Background()
	c, _ := startDaemon(t, testToken, testToken)
	if err := c.Health(ctx); err != nil {
		t.Errorf("Health: %v, want nil", err)
	}

	// With protect_metrics, /healthz needs the token too.
	fake := admintest.NewFake(sinks...)
	addr := admintest.Start(t, server.New(config.Server{Listen: "127.0.0.1:0", Token: testToken, ProtectMetrics: true}, fake.Options(sinks...)))
	for _, tt := range []struct {
		token string
		want  int // 0: healthy
	}{{testToken, 0}, {"", http.StatusUnauthorized}} {
		c, err := adminclient.New(&config.Config{Server: config.Server{Listen: addr, Token: tt.token}})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Health(ctx)
		var ae *adminclient.APIError
		switch {
		case tt.want == 0 && err != nil:
			t.Errorf("Health with the token: %v, want nil", err)
		case tt.want != 0 && (!errors.As(err, &ae) || ae.Status != tt.want):
			t.Errorf("Health without the token: %v, want an APIError with status %d", err, tt.want)
		}
	}

	// Nothing listening: not running.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	c, err = adminclient.New(&config.Config{Server: config.Server{Listen: addr}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Health(ctx); !errors.Is(err, adminclient.ErrNotRunning) {
		t.Errorf("Health with nothing listening: %v, want ErrNotRunning", err)
	}
}
