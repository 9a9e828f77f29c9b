package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// TestProgressPlainLines: off a terminal the bar prints one plain line per
// tenth, never control characters.
func TestProgressPlainLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgressBar(&buf, "app-misc/hello-1.0")
	for done := int64(0); done <= 1000; done += 50 {
		p.update(api.FetchProgress{Done: done, Total: 1000, Peers: 3})
	}
	p.finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 11 {
		t.Fatalf("got %d lines, want 11 (0%%..100%%):\n%s", len(lines), buf.String())
	}
	if lines[10] != "fetching app-misc/hello-1.0: 100% of 1000 bytes from 3 peer(s)" {
		t.Errorf("last line %q", lines[10])
	}
	if strings.ContainsAny(buf.String(), "\r\033") {
		t.Error("control characters in non-terminal output")
	}
}

// TestProgressTerminal: on a terminal every redraw returns to the line's
// start and clears what a longer earlier bar left; the bar's line ends
// with a newline, so what follows does not overwrite or follow it.
func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := &progressBar{w: &buf, what: "x", tty: true, lastTenth: -1}
	p.update(api.FetchProgress{Done: 1023, Total: 1 << 20, Peers: 12})
	p.update(api.FetchProgress{Done: 1 << 20, Total: 1 << 20, Peers: 1})
	p.finish()
	out := buf.String()
	draws := strings.Split(out, "\r")[1:]
	if len(draws) != 2 {
		t.Fatalf("want 2 redraws, got %q", out)
	}
	for _, d := range draws {
		if !strings.Contains(d, "\033[K") {
			t.Errorf("redraw %q does not clear to the end of the line", d)
		}
	}
	if !strings.HasSuffix(out, "100%  1.0 MiB / 1.0 MiB  1 peer(s)\033[K\n") {
		t.Errorf("the bar does not end on its last state and a newline: %q", out)
	}
	p.finish() // idempotent
	if buf.String() != out {
		t.Error("a second finish wrote more")
	}
	var none bytes.Buffer
	q := &progressBar{w: &none, tty: true, lastTenth: -1}
	q.finish()
	if none.Len() != 0 {
		t.Errorf("finish without a bar wrote %q", none.String())
	}
}
