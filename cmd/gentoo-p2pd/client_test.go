package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// fakeDaemon answers the local API on a socket in a temp dir with h.
func fakeDaemon(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// TestClientCommandsShowTypedErrors: the CLI prints the daemon's message
// and exits with the status of its code, for a plain answer and for an
// error in the middle of a fetch's progress stream.
func TestClientCommandsShowTypedErrors(t *testing.T) {
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case api.PathTrustExplain:
			api.WriteError(w, api.Errorf(api.CodeNotFound, "trust explain: nothing in the catalog matches %q", r.URL.Query().Get("q")))
		case api.PathGateway, api.PathStatus:
			api.WriteError(w, api.Errorf(api.CodeUnavailable, "the gateway is disabled"))
		case api.PathFetch:
			var req api.FetchRequest
			json.NewDecoder(r.Body).Decode(&req)
			if req.Query == "refused" {
				api.WriteError(w, api.Errorf(api.CodeNotAllowed, "build x: not allowed by the trust policy"))
				return
			}
			// Refused after the stream started.
			enc := json.NewEncoder(w)
			enc.Encode(api.FetchEvent{Progress: &api.FetchProgress{Done: 1, Total: 2, Peers: 1}})
			enc.Encode(api.FetchEvent{Error: "build x: no usable provider left", Code: api.CodeUnavailable})
		default:
			api.WriteError(w, fmt.Errorf("boom"))
		}
	})
	for _, tc := range []struct {
		args   []string
		code   api.Code
		msg    string
		status int
	}{
		{[]string{"trust", "explain", "app-misc/nope-1"}, api.CodeNotFound, `trust explain: nothing in the catalog matches "app-misc/nope-1"`, exitNotFound},
		{[]string{"fetch", "refused"}, api.CodeNotAllowed, "build x: not allowed by the trust policy", exitNotAllowed},
		{[]string{"fetch", "midway"}, api.CodeUnavailable, "build x: no usable provider left", exitUnavailable},
		{[]string{"status"}, api.CodeUnavailable, "the gateway is disabled", exitUnavailable},
		{[]string{"peers"}, api.CodeInternal, "boom", exitFailure},
	} {
		_, _, err := runCLI(t, append(tc.args, "--api-socket", sock)...)
		if api.CodeOf(err) != tc.code || err.Error() != tc.msg {
			t.Errorf("%v: err %v (code %q), want %q %q", tc.args, err, api.CodeOf(err), tc.code, tc.msg)
		}
		if got := exitStatus(err); got != tc.status {
			t.Errorf("%v: exit status %d, want %d", tc.args, got, tc.status)
		}
	}
}

func TestExitStatusNotRunning(t *testing.T) {
	_, _, err := runCLI(t, "status", "--api-socket", filepath.Join(t.TempDir(), "none.sock"))
	if !errors.Is(err, api.ErrNotRunning) || exitStatus(err) != exitUnavailable {
		t.Errorf("no daemon: %v, exit status %d", err, exitStatus(err))
	}
	if exitStatus(errors.New("local failure")) != exitFailure {
		t.Error("a local failure is not exit status 1")
	}
}
