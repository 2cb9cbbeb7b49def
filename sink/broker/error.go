package broker

// Error is a failed attempt at a batch, with what to do about it. Each
// destination's classify says which of its broker's errors need an
// operator.
type Error struct {
	msg      string
	operator bool
	err      error
}

// Retry is an error that retrying may mend: msg says what failed, err (nil
// if none) is the broker's error underneath.
func Retry(msg string, err error) *Error { return &Error{msg: msg, err: err} }

// Operator is an error that retrying cannot mend until someone acts: msg
// says what failed and what to do, err (nil if none) is the broker's error
// underneath.
func Operator(msg string, err error) *Error { return &Error{msg: msg, operator: true, err: err} }

func (e *Error) Error() string { return e.msg }

// Unwrap is the broker's error underneath, if any.
func (e *Error) Unwrap() error { return e.err }

// NeedsOperator reports whether retrying cannot mend the error until
// someone acts.
func (e *Error) NeedsOperator() bool { return e.operator }
