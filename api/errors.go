package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Code is the machine-readable kind of a failed API call. The daemon sends
// it in every error body beside the message, and the HTTP status follows
// from it (Code.HTTPStatus), so a caller can tell a refusal by the trust
// policy from a missing package or an unreachable network without parsing
// the message.
type Code string

// The codes the daemon answers with.
const (
	// CodeBadRequest: the request itself is wrong: a body that is not the
	// expected JSON, an empty query, an announce with nothing to announce,
	// an endorsement that does not decode or whose signature fails. (400)
	CodeBadRequest Code = "bad_request"
	// CodeNotFound: nothing matches: no such endpoint, no attestation in
	// the catalog for a query, no such binpkg in PKGDIR. (404)
	CodeNotFound Code = "not_found"
	// CodeNotAllowed: the trust policy does not allow the build asked
	// for (not enough agreeing attestations, disputed, refused), so the
	// daemon will not fetch or hand it out. (403)
	CodeNotAllowed Code = "not_allowed"
	// CodeRejected: the request is well formed but what it names was
	// refused on its merits: a file in PKGDIR the daemon will not index
	// or attest, an endorsement it will not keep. (422)
	CodeRejected Code = "rejected"
	// CodeUnavailable: the daemon cannot do it now: the gateway is
	// disabled, no reachable peer delivered a verified copy of the build,
	// the request timed out. Retrying later may succeed. (503)
	CodeUnavailable Code = "unavailable"
	// CodeInternal: the daemon failed (its store, its disk). (500)
	CodeInternal Code = "internal"
)

// HTTPStatus is the status the daemon answers with for c; 500 for a code
// this version does not know.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeNotAllowed:
		return http.StatusForbidden
	case CodeRejected:
		return http.StatusUnprocessableEntity
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// codeForStatus guesses the code of an answer that carries none (a daemon
// older than the codes, or a body that is not JSON).
func codeForStatus(status int) Code {
	switch status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusForbidden:
		return CodeNotAllowed
	case http.StatusUnprocessableEntity:
		return CodeRejected
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	if status >= 400 && status < 500 {
		return CodeBadRequest
	}
	return CodeInternal
}

// Error is a failed API call: the daemon builds one from the failure of a
// handler and sends it as JSON ({"error": message, "code": code}) with the
// code's HTTP status; the client rebuilds the same Error from the answer,
// so callers on either side of the socket use errors.As or the Is…
// predicates alike.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"error"`
	// err is the cause on the daemon's side (for errors.Is/As there); a
	// rebuilt error has none.
	err error
}

// NewError wraps err with code; the message is err's.
func NewError(code Code, err error) *Error {
	return &Error{Code: code, Message: err.Error(), err: err}
}

// Errorf is NewError(code, fmt.Errorf(format, a...)).
func Errorf(code Code, format string, a ...any) *Error {
	return NewError(code, fmt.Errorf(format, a...))
}

func (e *Error) Error() string { return e.Message }

// Unwrap is the cause the daemon wrapped; nil on the client's side.
func (e *Error) Unwrap() error { return e.err }

// HTTPStatus is the status the daemon answers e with.
func (e *Error) HTTPStatus() int { return e.Code.HTTPStatus() }

// CodeOf is the code of the first *Error in err's chain, "" when there is
// none (a local failure, ErrNotRunning).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// IsBadRequest reports whether err is an API error with CodeBadRequest.
func IsBadRequest(err error) bool { return CodeOf(err) == CodeBadRequest }

// IsNotFound reports whether err is an API error with CodeNotFound.
func IsNotFound(err error) bool { return CodeOf(err) == CodeNotFound }

// IsNotAllowed reports whether err is an API error with CodeNotAllowed:
// the trust policy refused the build.
func IsNotAllowed(err error) bool { return CodeOf(err) == CodeNotAllowed }

// IsRejected reports whether err is an API error with CodeRejected.
func IsRejected(err error) bool { return CodeOf(err) == CodeRejected }

// IsUnavailable reports whether err is an API error with CodeUnavailable.
func IsUnavailable(err error) bool { return CodeOf(err) == CodeUnavailable }

// IsInternal reports whether err is an API error with CodeInternal.
func IsInternal(err error) bool { return CodeOf(err) == CodeInternal }

// WriteError answers err with the status and JSON body of its code (the
// code of the *Error in its chain; CodeInternal when there is none) and
// its whole message.
func WriteError(w http.ResponseWriter, err error) {
	code := CodeOf(err)
	if code == "" {
		code = CodeInternal
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code.HTTPStatus())
	// A client that went away gets nothing; there is nothing to undo.
	_ = json.NewEncoder(w).Encode(Error{Code: code, Message: err.Error()})
}

// errorFromResponse rebuilds the daemon's error from a failed answer.
func errorFromResponse(status int, body []byte) *Error {
	var e Error
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		if e.Code == "" {
			e.Code = codeForStatus(status)
		}
		return &e
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Code: codeForStatus(status), Message: fmt.Sprintf("daemon answered %d: %s", status, msg)}
}
