package netwatch

import "log"

// Logger is where netwatch reports what an operator should see: lost and
// regained origins, unusable files. CoreDNS's clog.P (and the plugin's
// clog.NewWithPlugin logger) satisfies it.
type Logger interface {
	Infof(format string, args ...any)
	Warningf(format string, args ...any)
	Errorf(format string, args ...any)
}

// Printf adapts a printf-style function (log.Printf, t.Logf) to a Logger,
// prefixing each message with its level as CoreDNS does.
type Printf func(format string, args ...any)

// Infof implements Logger.
func (p Printf) Infof(format string, args ...any) { p("[INFO] "+format, args...) }

// Warningf implements Logger.
func (p Printf) Warningf(format string, args ...any) { p("[WARNING] "+format, args...) }

// Errorf implements Logger.
func (p Printf) Errorf(format string, args ...any) { p("[ERROR] "+format, args...) }

// StdLogger writes through the standard log package; it is the default
// where no Logger is given.
var StdLogger Logger = Printf(log.Printf)

// Discard is a Logger that drops everything (benchmarks, quiet tests).
var Discard Logger = Printf(func(string, ...any) {})

// OrStd returns l, or StdLogger when l is nil.
func OrStd(l Logger) Logger {
	if l == nil {
		return StdLogger
	}
	return l
}
