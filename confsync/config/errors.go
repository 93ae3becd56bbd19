package config

import (
	"errors"
	"fmt"
	"strconv"
)

// Error is one problem in a configuration file.
type Error struct {
	File    string // file name as given to Load or Parse
	Line    int    // 1-based line; 0 when unknown
	Section string // e.g. `group "web"`, `cluster`; empty for top-level keys
	Key     string // the offending key, e.g. "ips"; empty for the whole file
	Msg     string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	where := e.Section
	if e.Key != "" {
		if where != "" {
			where += " "
		}
		where += fmt.Sprintf("key %q", e.Key)
	}
	if where == "" {
		return loc + ": " + e.Msg
	}
	return loc + ": " + where + ": " + e.Msg
}

// Errors returns the individual *Error values inside err (as returned by
// Load, Parse or LoadAgent), in file order. Other errors are returned as
// they are.
func Errors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// IsConfigError reports whether err contains at least one *Error.
func IsConfigError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
