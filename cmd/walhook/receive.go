package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/walhook/walhook/sink/webhook"
)

func newReceiveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "receive",
		Short: "Run a local receiver that prints each delivered message on one line",
		Long: "receive listens for walhook deliveries, verifies their signatures when given the sink's\n" +
			"secret, answers 200, and prints each message on one line: a development aid, like a\n" +
			"webhook provider's CLI listener. With --json it prints each message's JSON instead.",
		Args: noArgs,
	}
	listen := cmd.Flags().String("listen", "127.0.0.1:8080", "address to listen on")
	secret := cmd.Flags().String("secret", "", "the sink's secret (whsec_...), to verify signatures (env WALHOOK_RECEIVE_SECRET)")
	asJSON := cmd.Flags().Bool("json", false, "print each message as one line of JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *secret == "" {
			*secret = envOr("WALHOOK_RECEIVE_SECRET", "")
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", *listen, err)
		}
		out := cmd.OutOrStdout()
		fmt.Fprintf(cmd.ErrOrStderr(), "walhook receive: listening on http://%s/ (signatures %s)\n", ln.Addr(), map[bool]string{true: "verified", false: "not checked"}[*secret != ""])
		srv := &http.Server{Handler: &receiver{out: out, secret: *secret, json: *asJSON}, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-cmd.Context().Done()
			srv.Close()
		}()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return cmd
}

// receiver prints deliveries.
type receiver struct {
	mu     sync.Mutex
	out    io.Writer
	secret string
	json   bool
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "walhook receive takes POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	// A sink with compression: gzip sends large bodies gzipped; the
	// signature covers the JSON inside.
	body, err = webhook.Decode(r.Header, body, 256<<20)
	if err != nil {
		fmt.Fprintf(rc.out, "%s  rejected %s: %v\n", time.Now().Format("15:04:05"), r.Header.Get("webhook-id"), err)
		status := http.StatusBadRequest
		switch {
		case errors.Is(err, webhook.ErrBodyTooLarge):
			status = http.StatusRequestEntityTooLarge
		case errors.Is(err, webhook.ErrUnsupportedEncoding):
			status = http.StatusUnsupportedMediaType
		}
		http.Error(w, err.Error(), status)
		return
	}
	if rc.secret != "" {
		if err := webhook.Verify(rc.secret, r.Header, body, 5*time.Minute, time.Now()); err != nil {
			fmt.Fprintf(rc.out, "%s  rejected %s: %v\n", time.Now().Format("15:04:05"), r.Header.Get("webhook-id"), err)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
	}
	var batch struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		fmt.Fprintf(rc.out, "%s  rejected: body is not {\"data\":[...]}: %v\n", time.Now().Format("15:04:05"), err)
		http.Error(w, "body is not {\"data\":[...]}", http.StatusBadRequest)
		return
	}
	for _, raw := range batch.Data {
		if rc.json {
			var buf bytes.Buffer
			if json.Compact(&buf, raw) == nil {
				raw = buf.Bytes()
			}
			fmt.Fprintf(rc.out, "%s\n", raw)
			continue
		}
		fmt.Fprintln(rc.out, summarize(raw))
	}
	w.WriteHeader(http.StatusOK)
}

// summarize renders a message as "15:04:05  insert public.orders 0/16B3748:3 {...}".
func summarize(raw json.RawMessage) string {
	var m struct {
		Action   string          `json:"action"`
		Record   json.RawMessage `json:"record"`
		Changes  json.RawMessage `json:"changes"`
		Prefix   string          `json:"prefix"`
		Content  json.RawMessage `json:"content"`
		Metadata struct {
			Schema string `json:"table_schema"`
			Table  string `json:"table_name"`
			Key    string `json:"idempotency_key"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return string(raw)
	}
	ts := time.Now().Format("15:04:05")
	if m.Action == "message" {
		return fmt.Sprintf("%s  message %s %s %s", ts, m.Prefix, m.Metadata.Key, m.Content)
	}
	line := fmt.Sprintf("%s  %-8s %s.%s %s %s", ts, m.Action, m.Metadata.Schema, m.Metadata.Table, m.Metadata.Key, m.Record)
	if len(m.Changes) > 0 && string(m.Changes) != "null" && string(m.Changes) != "{}" {
		line += " changes=" + string(m.Changes)
	}
	return line
}
