package broker

import (
	"errors"
	"io"
	"testing"
)

func TestError(t *testing.T) {
	r := Retry("the broker is unreachable", io.EOF)
	if r.Error() != "the broker is unreachable" || r.NeedsOperator() || !errors.Is(r, io.EOF) {
		t.Errorf("Retry: got %q, operator %v, unwraps to EOF %v", r.Error(), r.NeedsOperator(), errors.Is(r, io.EOF))
	}
	o := Operator("no such stream", nil)
	if o.Error() != "no such stream" || !o.NeedsOperator() || o.Unwrap() != nil {
		t.Errorf("Operator: got %q, operator %v, underneath %v", o.Error(), o.NeedsOperator(), o.Unwrap())
	}
}
