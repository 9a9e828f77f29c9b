package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/term"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

func absDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", abs)
	}
	return abs, nil
}

// progressBar draws fetch progress: a bar redrawn in place on a terminal,
// a plain line per 10% otherwise (logs and pipes get no control characters).
type progressBar struct {
	w         io.Writer
	what      string
	tty       bool
	lastTenth int64
	drawn     bool
	everDrawn bool
}

func newProgressBar(w io.Writer, what string) *progressBar {
	f, ok := w.(*os.File)
	return &progressBar{w: w, what: what, tty: ok && term.IsTerminal(int(f.Fd())), lastTenth: -1}
}

func (p *progressBar) update(pr api.FetchProgress) {
	if pr.Total <= 0 {
		return
	}
	if !p.tty {
		tenth := pr.Done * 10 / pr.Total
		if tenth != p.lastTenth {
			p.lastTenth = tenth
			fmt.Fprintf(p.w, "fetching %s: %d%% of %d bytes from %d peer(s)\n", p.what, tenth*10, pr.Total, pr.Peers)
		}
		return
	}
	const width = 30
	done := min(max(pr.Done, 0), pr.Total)
	filled := int(done * width / pr.Total)
	// \r returns to the start of the line and \033[K clears what a longer
	// earlier bar left to the right of this one.
	fmt.Fprintf(p.w, "\r[%s%s] %3d%%  %s / %s  %d peer(s)\033[K", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		done*100/pr.Total, humanBytes(done), humanBytes(pr.Total), pr.Peers)
	p.drawn, p.everDrawn = true, true
}

// finish ends the bar's line, leaving its last state on screen, so what
// follows starts on a line of its own.
func (p *progressBar) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// started reports whether any progress arrived (the transfer was under way).
func (p *progressBar) started() bool { return p.lastTenth >= 0 || p.everDrawn }

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func peerID(k crypto.PrivKey) (string, error) {
	id, err := peer.IDFromPrivateKey(k)
	return id.String(), err
}
