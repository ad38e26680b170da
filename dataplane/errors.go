package dataplane

import (
	"errors"
	"fmt"
)

// ErrNotFound and ErrExists classify the switch's refusals, so that callers
// (the API) can tell a missing port or network, or a duplicate, from a
// failure: check with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrInUse refuses a device the host itself uses.
	ErrInUse = errors.New("in use")
	// ErrUnfit refuses a device the switch cannot serve as configured
	// (too few queues, an MTU larger than its frames, no frames left).
	ErrUnfit = errors.New("unfit")
	// ErrInvalid refuses what the caller asked for as such: rules that
	// do not compile, say.
	ErrInvalid = errors.New("invalid")
)

// kindError carries a message of its own and a class for errors.Is.
type kindError struct {
	msg  string
	kind error
	err  error // what caused it, if anything
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }
func (e *kindError) Unwrap() error        { return e.err }

func notFoundf(format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: ErrNotFound}
}

func existsf(format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: ErrExists}
}

func inUsef(format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: ErrInUse}
}

func unfitf(format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...), kind: ErrUnfit}
}

// invalidf classifies err, the caller's mistake, as ErrInvalid, after
// a prefix that says what it was about.
func invalidf(err error, format string, args ...any) error {
	return &kindError{msg: fmt.Sprintf(format, args...) + ": " + err.Error(), kind: ErrInvalid, err: err}
}
