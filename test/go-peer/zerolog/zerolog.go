// Package zerolog is a stand-in for github.com/rs/zerolog with only what the
// original's ipc.go calls: a logger built with New(w).With()...Logger() whose
// Warn().Err(err).Msg(m) writes one line.
package zerolog

import (
	"fmt"
	"io"
	"strings"
)

type Logger struct {
	w      io.Writer
	fields []string
}

type Context struct{ l Logger }

type Event struct {
	l      Logger
	level  string
	fields []string
}

func New(w io.Writer) Logger { return Logger{w: w} }

func (l Logger) With() Context {
	return Context{l: Logger{w: l.w, fields: append([]string(nil), l.fields...)}}
}

func (c Context) Timestamp() Context { return c }

func (c Context) Str(key, value string) Context {
	c.l.fields = append(c.l.fields, key+"="+value)
	return c
}

func (c Context) Logger() Logger { return c.l }

func (l Logger) event(level string) *Event { return &Event{l: l, level: level} }

func (l Logger) Debug() *Event { return l.event("debug") }
func (l Logger) Info() *Event  { return l.event("info") }
func (l Logger) Warn() *Event  { return l.event("warn") }
func (l Logger) Error() *Event { return l.event("error") }

func (e *Event) Err(err error) *Event {
	e.fields = append(e.fields, fmt.Sprintf("error=%q", fmt.Sprint(err)))
	return e
}

func (e *Event) Msg(msg string) {
	if e.l.w == nil {
		return
	}
	fields := append(append([]string(nil), e.l.fields...), e.fields...)
	fmt.Fprintf(e.l.w, "%s %s %s\n", e.level, msg, strings.Join(fields, " "))
}
