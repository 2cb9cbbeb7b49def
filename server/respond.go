package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
)

// maxBody bounds a request body. Admin requests are a few IDs or table names.
const maxBody = 1 << 20

// writeJSON answers with status and v as JSON.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.log.Error("admin server: encode answer", "err", err)
		status = http.StatusInternalServerError
		body = []byte(`{"error":"the answer could not be encoded as JSON"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError answers {"error": msg} with status.
func (s *Server) writeError(w http.ResponseWriter, status int, format string, args ...any) {
	s.writeJSON(w, status, Error{Error: fmt.Sprintf(format, args...)})
}

// fail answers an error an interface method returned, with the status its
// kind calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, ok := s.failStatus(r, err, "admin request failed")
	if !ok {
		return
	}
	s.writeError(w, status, "%s", err.Error())
}

// notImplemented answers for an interface the server was not given.
func (s *Server) notImplemented(w http.ResponseWriter, what string) {
	s.writeError(w, http.StatusNotImplemented, "%s not available in this walhook", what)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, http.StatusNotFound, "no such endpoint: %s %s; the admin API is under /api/v1", r.Method, r.URL.Path)
}

// methodNotAllowed answers 405 with the Allow header chi's own answer has,
// which chi does not pass to a custom handler, so it is found again here.
func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		if s.router.Match(chi.NewRouteContext(), m, routePath(r)) {
			allowed = append(allowed, m)
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	s.writeError(w, http.StatusMethodNotAllowed, "%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))
}

// routePath is the path the router matches on: chi routes on the escaped
// path when there is one.
func routePath(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	return r.URL.Path
}

// decodeBody decodes a JSON request body into v. An empty body leaves v as
// it is. The error says what is wrong with the body, for a 400.
func decodeBody(r *http.Request, v any, fields string) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if len(body) > maxBody {
		return fmt.Errorf("request body is larger than %d bytes", maxBody)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syntax *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax):
			return fmt.Errorf("request body is not valid JSON (at byte %d: %s); send an object such as %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "), fields)
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return fmt.Errorf("request body: %s is a JSON %s, want %s; send an object such as %s", typeErr.Field, typeErr.Value, jsonKind(typeErr.Type.Kind().String()), fields)
		case errors.As(err, &typeErr):
			return fmt.Errorf("request body is a JSON %s, want an object such as %s", typeErr.Value, fields)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("request body is cut short: not a complete JSON object; send an object such as %s", fields)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return fmt.Errorf("request body has %s; send an object such as %s", strings.TrimPrefix(err.Error(), "json: "), fields)
		}
		return fmt.Errorf("request body: %w", err)
	}
	if dec.Decode(new(json.RawMessage)) != io.EOF {
		return fmt.Errorf("request body holds more than one JSON value; send one object such as %s", fields)
	}
	return nil
}

// jsonKind names a Go kind as a JSON type.
func jsonKind(kind string) string {
	switch kind {
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return "a number"
}

// failStatus is the status an error an interface method returned calls
// for, by its kind; an unexpected one is logged with what. It reports
// false when the client went away and nobody reads the answer.
func (s *Server) failStatus(r *http.Request, err error, what string) (int, bool) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, ErrUnavailable):
		status = http.StatusServiceUnavailable
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		return 0, false
	}
	if status == http.StatusInternalServerError {
		s.log.Error(what, "method", r.Method, "path", r.URL.Path, "err", err)
	}
	return status, true
}
