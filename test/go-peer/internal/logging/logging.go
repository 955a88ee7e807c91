// Package logging is a stand-in for the original's internal/logging: only the
// default logger its ipc.go asks for.
package logging

import (
	"os"

	"github.com/rs/zerolog"
)

var defaultLogger = zerolog.New(os.Stderr)

func GetDefaultLogger() *zerolog.Logger { return &defaultLogger }
