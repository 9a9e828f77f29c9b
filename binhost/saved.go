package binhost

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// What Entries derives from a build key's votes is kept in the store
// (store.PutDerived) with the build key's vote version, so the first
// index after a restart reads it instead of decoding and verifying every
// vote again. A saved result is used only by the same build of the
// daemon (codeIdentity), for the same platform, policy and identity
// (votes.Book.Fingerprint), while the build key's vote version has not
// moved; anything else derives it afresh. Allowed builds whose voters
// state no served size are not saved: they are listed from their votes.

// derivedFormat names what is saved; the code identity changes with any
// change of the derivation anyway.
const derivedFormat = "gentoo-p2pd listings v1"

// savedDerived is a derived as the store keeps it.
type savedDerived struct {
	Print   string        `json:"print"`
	Version uint64        `json:"version"`
	Allowed bool          `json:"allowed"`
	Reason  string        `json:"reason,omitempty"`
	Listing *savedListing `json:"listing,omitempty"`
	Fit     *fit.Build    `json:"fit,omitempty"`
	Cat     string        `json:"cat,omitempty"`
	PN      string        `json:"pn,omitempty"`
}

type savedListing struct {
	Content     string            `json:"content"`
	ImageDigest string            `json:"image_digest"`
	Metadata    map[string]string `json:"metadata"`
	BuildID     int64             `json:"build_id"`
	Time        int64             `json:"time"`
	Served      xpak.ServedSizes  `json:"served"`
}

// savedKey is where the store keeps what was derived of bk.
func savedKey(bk keys.Build) string { return "binhost\x00" + string(bk) }

// print is the fingerprint a saved result must carry to be used here; ok
// is false when nothing may be kept (verdicts depend on local files).
func (ls *Listings) print() (string, bool) {
	ls.printOnce.Do(func() {
		fp, ok := ls.votes.Fingerprint()
		if !ok {
			return
		}
		h := sha256.New()
		for _, s := range []string{derivedFormat, codeIdentity(), ls.platform, string(fp[:])} {
			h.Write([]byte(s))
			h.Write([]byte{0})
		}
		ls.printed = hex.EncodeToString(h.Sum(nil))
	})
	return ls.printed, ls.printed != ""
}

// save encodes d, derived at vote version version.
func (d *derived) save(print string, version uint64) ([]byte, bool) {
	if d.allowed && !d.served {
		return nil, false
	}
	s := savedDerived{Print: print, Version: version, Allowed: d.allowed, Reason: d.reason, Cat: d.cat, PN: d.pn}
	if d.allowed && d.reason == "" {
		md := map[string]string{}
		for _, k := range d.listing.Metadata.Keys() {
			v, _ := d.listing.Metadata.Raw(k)
			md[k] = string(v)
		}
		l := d.listing
		s.Listing = &savedListing{
			Content: l.Content, ImageDigest: hex.EncodeToString(l.ImageDigest[:]), Metadata: md,
			BuildID: l.BuildID, Time: l.Time.Unix(), Served: l.Served,
		}
		s.Fit = &d.fit
	}
	raw, err := json.Marshal(s)
	return raw, err == nil
}

// restore decodes a saved result, or returns nil when there is none or it
// is not for this daemon, or the votes moved since (version).
func restore(raw []byte, print string, version, gen uint64) *derived {
	if raw == nil {
		return nil
	}
	var s savedDerived
	if json.Unmarshal(raw, &s) != nil || s.Print != print || s.Version != version {
		return nil
	}
	d := &derived{gen: gen, allowed: s.Allowed, reason: s.Reason, served: s.Allowed, cat: s.Cat, pn: s.PN}
	if !s.Allowed || s.Reason != "" {
		return d
	}
	if s.Listing == nil || s.Fit == nil {
		return nil
	}
	digest, err := hex.DecodeString(s.Listing.ImageDigest)
	if err != nil || len(digest) != 32 {
		return nil
	}
	md := make(map[string][]byte, len(s.Listing.Metadata))
	for k, v := range s.Listing.Metadata {
		md[k] = []byte(v)
	}
	d.listing = portagehook.Listing{
		Content: s.Listing.Content, ImageDigest: [32]byte(digest), Metadata: xpak.NewMetadata(md),
		BuildID: s.Listing.BuildID, Time: time.Unix(s.Listing.Time, 0).UTC(), Served: s.Listing.Served,
	}
	d.fit = *s.Fit
	return d
}

// codeIdentity names this build of the daemon: its VCS revision when it
// was built from a clean checkout, its module version when installed as
// one, or else the SHA-256 of its executable (which a changed derivation
// changes). A process that can tell none gets a random one: nothing it
// saves is used by another.
var codeIdentity = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" && modified == "false" {
			return "vcs " + rev + " " + bi.GoVersion
		}
	}
	if exe, err := os.Executable(); err == nil {
		if f, err := os.Open(exe); err == nil {
			defer f.Close()
			h := sha256.New()
			if _, err := io.Copy(h, f); err == nil {
				return "exe " + hex.EncodeToString(h.Sum(nil))
			}
		}
	}
	return "random " + rand.Text()
})
