package localapi

import (
	"context"
	"errors"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
)

// Sentinel errors of the local API, for errors.Is. The Server's methods
// return their failures as *api.Error values wrapping these (and the job
// packages' own sentinels, such as materialize.ErrNotAllowed).
var (
	// ErrNoMatch is a query nothing in the catalog matches (fetch, trust
	// explain): api.CodeNotFound.
	ErrNoMatch = errors.New("nothing in the catalog matches")
	// ErrEmptyQuery is a query with nothing in it: api.CodeBadRequest.
	ErrEmptyQuery = errors.New("empty query: give a build key, variant key or category/package-version")
	// ErrGatewayDisabled answers a request for the gateway when it is off:
	// api.CodeUnavailable.
	ErrGatewayDisabled = errors.New("the gateway is disabled (gateway.enabled = false)")
)

// classify gives err its API code: the codes every endpoint shares come
// from the sentinels in its chain; an error no rule recognises gets
// fallback, which the endpoint chooses for what its own job package
// reports without a sentinel.
func classify(err error, fallback api.Code) error {
	if err == nil {
		return nil
	}
	if api.CodeOf(err) != "" {
		return err
	}
	code := fallback
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = api.CodeUnavailable
	case errors.Is(err, materialize.ErrNotAllowed):
		code = api.CodeNotAllowed
	case errors.Is(err, materialize.ErrNoProvider):
		code = api.CodeUnavailable
	case errors.Is(err, own.ErrNoBinpkg):
		code = api.CodeNotFound
	case errors.Is(err, own.ErrOutsidePKGDIR):
		code = api.CodeRejected
	case errors.Is(err, ErrNoMatch):
		code = api.CodeNotFound
	case errors.Is(err, ErrEmptyQuery):
		code = api.CodeBadRequest
	case errors.Is(err, ErrGatewayDisabled):
		code = api.CodeUnavailable
	case storeFailure(err), errors.Is(err, transfer.ErrDiskWrite):
		code = api.CodeInternal
	}
	return api.NewError(code, err)
}

// storeFailure reports the state database failing (not a request's fault).
func storeFailure(err error) bool {
	for _, s := range []error{store.ErrClosed, store.ErrCorrupt, store.ErrSchema, store.ErrInUse} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
