package main

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// TestPeersAddCLI: `peers add` posts the address and prints the peer, or
// the daemon's typed refusal with its exit status.
func TestPeersAddCLI(t *testing.T) {
	const id = "12D3KooWGNAeXBxGcYyHrS9ma8uVSmxL3oxBrXqigyvejptFRvuX"
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		var req api.PeersAddRequest
		if r.Method != http.MethodPost || r.URL.Path != api.PathPeersAdd || json.NewDecoder(r.Body).Decode(&req) != nil {
			api.WriteError(w, api.Errorf(api.CodeNotFound, "no such endpoint"))
			return
		}
		switch req.Addr {
		case "/ip4/192.0.2.7/tcp/4701/p2p/" + id:
			json.NewEncoder(w).Encode(api.PeersAddResult{ID: id, Addrs: []string{"/ip4/192.0.2.7/tcp/4701"}})
		case "down":
			api.WriteError(w, api.Errorf(api.CodeUnavailable, "peers add: dial failed"))
		default:
			api.WriteError(w, api.Errorf(api.CodeBadRequest, "peers add: %q is not a multiaddr", req.Addr))
		}
	})
	out, _, err := runCLI(t, "peers", "add", "/ip4/192.0.2.7/tcp/4701/p2p/"+id, "--api-socket", sock)
	if err != nil || out != "connected to "+id+"\n" {
		t.Errorf("peers add: %q, %v", out, err)
	}
	for _, tc := range []struct {
		arg    string
		code   api.Code
		status int
	}{
		{"down", api.CodeUnavailable, exitUnavailable},
		{"nonsense", api.CodeBadRequest, exitFailure},
	} {
		_, _, err := runCLI(t, "peers", "add", tc.arg, "--api-socket", sock)
		if api.CodeOf(err) != tc.code || exitStatus(err) != tc.status {
			t.Errorf("peers add %s: %v (code %q, exit %d), want %s exit %d", tc.arg, err, api.CodeOf(err), exitStatus(err), tc.code, tc.status)
		}
	}
	if _, _, err := runCLI(t, "peers", "add", "--api-socket", sock); err == nil {
		t.Error("peers add without an address succeeded")
	}
}
