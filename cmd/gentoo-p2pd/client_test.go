package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestFetchInterrupted: Ctrl-C during a fetch says on stderr that the
// daemon goes on downloading (it does: the transfer runs under the daemon's
// context), and exits 130 rather than printing "context canceled".
func TestFetchInterrupted(t *testing.T) {
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.FetchEvent{Progress: &api.FetchProgress{Done: 1, Total: 2, Peers: 1}})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	// Ctrl-C once the progress line is shown.
	cmd.SetErr(writerFunc(func(p []byte) (int, error) {
		if bytes.HasPrefix(p, []byte("fetching ")) {
			cancel()
		}
		return errb.Write(p)
	}))
	dir := t.TempDir()
	cmd.SetArgs([]string{"fetch", "app-misc/hello-1.0", "--to", dir, "--api-socket", sock})
	err := cmd.ExecuteContext(ctx)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != exitInterrupted {
		t.Fatalf("interrupted fetch: err = %v, want exit status %d", err, exitInterrupted)
	}
	for _, want := range []string{"the daemon goes on downloading app-misc/hello-1.0 in the background", "nothing was copied to " + dir, "run the same fetch again"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	if out.Len() != 0 {
		t.Errorf("stdout: %q", out.String())
	}
}

// TestSocketDiscovery: with no daemon of your own the CLI finds the system
// service's socket; with none at all the error lists every path tried; a
// socket named with --api-socket is the only one tried.
func TestSocketDiscovery(t *testing.T) {
	root := t.TempDir()
	t.Setenv("HOME", filepath.Join(root, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(root, "config"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(root, "state"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(root, "run"))
	t.Setenv("GENTOO_P2PD_API_SOCKET", "")
	own := filepath.Join(root, "run", "gentoo-p2pd.sock")
	sys := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.PeersResponse{})
	})
	old := systemSocket
	t.Cleanup(func() { systemSocket = old })

	systemSocket = sys
	if out, _, err := runCLI(t, "peers"); err != nil || out != "no peers connected\n" {
		t.Errorf("peers with only the system daemon: %q, %v", out, err)
	}
	if _, _, err := runCLI(t, "peers", "--api-socket", own); !errors.Is(err, api.ErrNotRunning) || strings.Contains(err.Error(), sys) {
		t.Errorf("--api-socket: another daemon was tried: %v", err)
	}

	systemSocket = filepath.Join(root, "system", "api.sock")
	_, _, err := runCLI(t, "peers")
	if !errors.Is(err, api.ErrNotRunning) || !strings.Contains(err.Error(), own+", "+systemSocket) {
		t.Errorf("no daemon: %v; want both %s and %s named", err, own, systemSocket)
	}
}

// TestSetupSockets: sudo setup-portage asks the invoking user's daemon,
// then the system service, then root's own.
func TestSetupSockets(t *testing.T) {
	t.Setenv("GENTOO_P2PD_API_SOCKET", "")
	cmd := newSetupPortageCmd()
	t.Setenv("SUDO_UID", "1000")
	got := setupSockets(cmd, "/root/.local/state/gentoo-p2pd/api.sock")
	want := []string{"/run/user/1000/gentoo-p2pd.sock", systemSocket, "/root/.local/state/gentoo-p2pd/api.sock"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("under sudo: %v, want %v", got, want)
	}
	t.Setenv("SUDO_UID", "")
	if got := setupSockets(cmd, "/run/user/0/gentoo-p2pd.sock"); strings.Join(got, " ") != "/run/user/0/gentoo-p2pd.sock "+systemSocket {
		t.Errorf("without sudo: %v", got)
	}
	if err := cmd.Flags().Set("api-socket", "/x.sock"); err != nil {
		t.Fatal(err)
	}
	if got := setupSockets(cmd, "/x.sock"); len(got) != 1 {
		t.Errorf("--api-socket: %v, want it alone", got)
	}
}

// TestDaemonListenErrorNamesKey: a gateway or libp2p port already taken
// is reported with the config key to change.
func TestDaemonListenErrorNamesKey(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	root := t.TempDir()
	t.Setenv("HOME", filepath.Join(root, "home"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(root, "config"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(root, "state"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(root, "run"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := newRootCmd()
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"daemon", "--gateway-listen", addr, "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--rendezvous=false",
		"--pkgdir", filepath.Join(root, "binpkgs"), "--portage-repo", filepath.Join(root, "repo"), "--log-level", "error"})
	err = cmd.ExecuteContext(ctx)
	want := "gateway.listen " + addr + ": address already in use (another daemon, perhaps another user's, holds it: set gateway.listen to another port)"
	if err == nil || err.Error() != want {
		t.Errorf("daemon on a taken gateway port: %v\nwant %s", err, want)
	}

	// The libp2p port: another daemon's (p2p.TestSecondNodeOnTakenPort
	// shows libp2p alone would share it), here any socket.
	taken := "/ip4/127.0.0.1/tcp/" + fmt.Sprint(busy.Addr().(*net.TCPAddr).Port)
	cmd = newRootCmd()
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"daemon", "--gateway-listen", "127.0.0.1:0", "--listen", taken, "--mdns=false", "--rendezvous=false",
		"--pkgdir", filepath.Join(root, "binpkgs"), "--portage-repo", filepath.Join(root, "repo"), "--log-level", "error"})
	err = cmd.ExecuteContext(ctx)
	want = "network.listen " + taken + ": address already in use (another daemon, perhaps another user's, holds it: set network.listen to another port)"
	if err == nil || err.Error() != want {
		t.Errorf("daemon on a taken libp2p port: %v\nwant %s", err, want)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
