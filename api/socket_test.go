package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestListenRefusesLiveDaemonAndReplacesStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode = %o, want 600", perm)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(sock); !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("second Listen on a live socket: err = %v, want ErrDaemonRunning", err)
	}
	// Simulate a crash: the listener goes away, the socket file stays.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket should still exist: %v", err)
	}
	l2, err := Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l2.Close()
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("regular file was modified")
	}
}

func TestClientNotRunningAndRoundTrip(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	c := NewClient(sock)
	var st Status
	if err := c.Get(context.Background(), PathStatus, nil, &st); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("err = %v, want ErrNotRunning", err)
	}
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != PathStatus {
			WriteError(w, Errorf(CodeNotFound, "no such endpoint %s", r.URL.Path))
			return
		}
		json.NewEncoder(w).Encode(Status{Mode: "consume", Threshold: 4})
	})}
	go srv.Serve(l)
	defer srv.Close()
	if err := c.Get(context.Background(), PathStatus, nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != "consume" || st.Threshold != 4 {
		t.Errorf("got %+v", st)
	}
	err = c.Get(context.Background(), "/api/v0/nope", nil, &st)
	if err == nil || err.Error() != "no such endpoint /api/v0/nope" {
		t.Errorf("error from daemon not passed through: %v", err)
	}
}

// processUmask reads the umask from /proc/self/status without changing it
// (syscall.Umask can only be read by setting it).
// It returns "" when the kernel does not report it.
func processUmask() string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(l, []byte("Umask:")); ok {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

// TestListenLeavesUmaskAlone: the umask is process-wide, so Listen must
// never change it — other goroutines (other daemons in the same test or
// demo process) create files meanwhile and would get the wrong modes. A
// watcher samples the umask while Listen runs many times.
func TestListenLeavesUmaskAlone(t *testing.T) {
	want := processUmask()
	if want == "" {
		t.Skip("/proc/self/status reports no Umask (Linux < 4.7 or no procfs)")
	}
	dir := t.TempDir()
	var stop atomic.Bool
	var seen []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if got := processUmask(); got != want {
				seen = append(seen, got)
			}
		}
	}()
	sock := filepath.Join(dir, "api.sock")
	for i := 0; i < 300; i++ {
		l, err := Listen(sock)
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
		l.Close()
	}
	stop.Store(true)
	wg.Wait()
	if len(seen) != 0 {
		t.Fatalf("umask %s changed to %s while Listen ran (%d samples)", want, seen[0], len(seen))
	}
}

// TestFindSocket: the first socket a daemon answers on wins, whatever comes
// before it; with none, the error is ErrNotRunning and names every path.
func TestFindSocket(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	stale := filepath.Join(dir, "stale.sock")
	live := filepath.Join(dir, "live.sock")
	sl, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	sl.(*net.UnixListener).SetUnlinkOnClose(false)
	sl.Close() // the file stays, nobody answers
	l, err := Listen(live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, err := FindSocket(context.Background(), []string{missing, stale, live, missing})
	if err != nil || got != live {
		t.Fatalf("FindSocket = %q, %v; want %q", got, err, live)
	}
	_, err = FindSocket(context.Background(), []string{missing, stale, missing})
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("no daemon: err = %v, want ErrNotRunning", err)
	}
	if msg := err.Error(); !strings.Contains(msg, missing+", "+stale+";") {
		t.Errorf("error does not list each path tried once: %s", msg)
	}
}
