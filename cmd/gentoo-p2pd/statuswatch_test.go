package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// TestStatusWatch: --watch draws the status again and again, separated by
// a blank line when not on a terminal, and Ctrl-C (the context ending)
// stops it without an error.
func TestStatusWatch(t *testing.T) {
	var draws atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.PathStatus {
			api.WriteError(w, errors.New("unexpected "+r.URL.Path))
			return
		}
		if draws.Add(1) == 3 {
			cancel() // Ctrl-C during the third request
		}
		json.NewEncoder(w).Encode(api.Status{Mode: "share", PeerID: "12D3KooWwatch"})
	})
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"status", "--watch", "--interval", "10ms", "--api-socket", sock})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("status --watch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("status --watch did not stop on cancel")
	}
	s := out.String()
	if n := strings.Count(s, "12D3KooWwatch"); n < 2 {
		t.Errorf("%d draws, want at least 2:\n%s", n, s)
	}
	if !strings.Contains(s, "\n\nmode ") || strings.Contains(s, clearScreen) {
		t.Errorf("draws on a pipe are not separated by a blank line, or the screen is cleared:\n%q", s)
	}
}

// TestWatchStatusTerminal: on a terminal each draw clears the screen; an
// error after the first draw is shown and watching goes on.
func TestWatchStatusTerminal(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	draw := func(ctx context.Context, w io.Writer) error {
		n++
		switch n {
		case 2:
			return errors.New("daemon restarting")
		case 4:
			cancel()
		}
		_, err := io.WriteString(w, "frame\n")
		return err
	}
	var out bytes.Buffer
	if err := watchStatus(ctx, &out, time.Millisecond, true, draw); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Count(s, clearScreen) != 3 || !strings.Contains(s, "status: daemon restarting") || !strings.Contains(s, "Ctrl-C to stop") {
		t.Errorf("terminal output:\n%q", s)
	}
	// The first draw's error is the command's.
	first := func(context.Context, io.Writer) error { return api.ErrNotRunning }
	if err := watchStatus(context.Background(), io.Discard, time.Millisecond, false, first); !errors.Is(err, api.ErrNotRunning) {
		t.Errorf("first draw failing: %v", err)
	}
}

func TestStatusIntervalChecked(t *testing.T) {
	for _, args := range [][]string{{"status", "--interval", "1s"}, {"status", "--watch", "--interval", "0s"}} {
		if _, _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), "--interval") {
			t.Errorf("%v: err = %v", args, err)
		}
	}
}
