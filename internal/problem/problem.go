// Package problem reports problems with option values by the path of the
// option, so that whoever owns the configuration file can point at the key
// (and line) a problem concerns.
//
// Each package that takes options validates them itself and reports every
// problem as an *Error whose Path is the option's path in snake_case, the
// way the configuration file spells it relative to where the options live
// ("leeway", "jwks.min_refresh", "paths[2]"). The wiring prefixes the paths
// with the options' own location ("issuers[0].") and the configuration
// package turns them into file:line problems.
package problem

import (
	"errors"
	"fmt"
)

// Error is one problem with the option at Path.
type Error struct {
	Path string
	Msg  string
	// Err is the underlying error, if any (Msg already says what it says).
	Err error
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// List collects problems; the zero value is ready to use.
type List struct{ errs []error }

// Add records a problem at path.
func (l *List) Add(path, format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	l.errs = append(l.errs, &Error{Path: path, Msg: msg})
}

// Merge records every problem of err under prefix (see Prefix).
func (l *List) Merge(prefix string, err error) {
	if err == nil {
		return
	}
	l.errs = append(l.errs, Split(Prefix(prefix, err))...)
}

// Err joins the problems, nil when there are none.
func (l *List) Err() error { return errors.Join(l.errs...) }

// Prefix returns err with prefix prepended to the path of every *Error in
// it (a joined error is walked one level; other errors are put under
// prefix as a whole). An empty prefix returns err unchanged.
func Prefix(prefix string, err error) error {
	if err == nil || prefix == "" {
		return err
	}
	parts := Split(err)
	out := make([]error, len(parts))
	for i, e := range parts {
		var fe *Error
		switch {
		case errors.As(e, &fe) && fe == e:
			out[i] = &Error{Path: join(prefix, fe.Path), Msg: fe.Msg, Err: fe.Err}
		default:
			out[i] = &Error{Path: prefix, Msg: e.Error(), Err: e}
		}
	}
	return errors.Join(out...)
}

// Split returns the errors joined in err (err itself when it is not a
// join).
func Split(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Split(e)...)
		}
		return out
	}
	return []error{err}
}

func join(prefix, path string) string {
	switch {
	case path == "":
		return prefix
	case path[0] == '[':
		return prefix + path
	default:
		return prefix + "." + path
	}
}
