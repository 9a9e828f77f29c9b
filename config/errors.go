package config

import (
	"errors"
	"fmt"
)

// Sentinel errors let callers tell a user mistake from an I/O failure with
// errors.Is; every returned error wraps one of them (or an *os.PathError)
// and names the key, file or line at fault.
var (
	// ErrInvalidValue: a key holds a value of the wrong type or out of range.
	ErrInvalidValue = errors.New("invalid value")
	// ErrUnknownKey: the config file sets a key this version does not know,
	// most often a typo that would otherwise be silently ignored.
	ErrUnknownKey = errors.New("unknown key")
	// ErrConfigFile: the config file could not be read or is not valid TOML.
	ErrConfigFile = errors.New("bad config file")
	// ErrMakeConf: a make.conf (or a file it sources) is not the
	// bash-assignment subset portage itself accepts.
	ErrMakeConf = errors.New("bad make.conf")
	// ErrPortageq: running `portageq` failed or printed something unexpected.
	ErrPortageq = errors.New("portageq failed")
)

// invalidError reads as just its message but matches ErrInvalidValue, so
// messages stay short ("config: trust.threshold: must be ≥ 1, got 0").
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalidValue }

func invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}
