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
