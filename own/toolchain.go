package own

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/fit"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// toolchainFacts is the build environment this daemon states for one of
// its builds (trust.Builder without the informational Portage): derived
// when the file is indexed and stored with it, so a restart states the
// same without reading the file or the vdb again.
type toolchainFacts struct {
	GCC      string `json:"gcc,omitempty"`
	Binutils string `json:"binutils,omitempty"`
	Libc     string `json:"libc,omitempty"`
	BuildDir string `json:"build_dir,omitempty"`
}

// matches reports whether b states these facts.
func (tf toolchainFacts) matches(b trust.Builder) bool {
	return b.GCC == tf.GCC && b.Binutils == tf.Binutils && b.Libc == tf.Libc && b.BuildDir == tf.BuildDir
}

// imageScan reads an image once, as its entries stream by: what its
// content needs of a machine (fit.Scanner reads the front of each ELF
// file) and what its bytes say of the toolchain (tc reads every regular
// file whole).
type imageScan struct {
	needs fit.Scanner
	tc    *identity.ToolchainScanner
	buf   []byte
}

// imageScans recycles imageScans with their buffers (fit.Scanner's 1
// MiB, the copy buffer): they were a tenth of what indexing a PKGDIR
// allocated.
var imageScans sync.Pool

// newImageScan scans the image of the package m describes; release it
// after its last use.
func newImageScan(m *xpak.Metadata) *imageScan {
	tc := identity.NewToolchainScanner(m.Category(), m.PF())
	tc.Prebuilt(m.Get("QA_PREBUILT"))
	s, _ := imageScans.Get().(*imageScan)
	if s == nil {
		s = &imageScan{}
	}
	s.needs.Reset()
	s.tc = tc
	return s
}

// release hands s back for another image.
func (s *imageScan) release() {
	s.tc = nil
	imageScans.Put(s)
}

// entry is the xpak.WalkImage callback.
func (s *imageScan) entry(e xpak.ImageEntry, r io.Reader) error {
	if e.Type != xpak.TypeFile {
		return nil
	}
	if s.buf == nil {
		// The rest of each file goes to tc in large writes (io.Discard's
		// own ReadFrom would cut it into 8 KiB ones).
		s.buf = make([]byte, 64<<10)
	}
	w := s.tc.File(e.Name)
	tee := io.TeeReader(r, w)
	if err := s.needs.Add(e.Name, tee, e.Size); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, tee, s.buf); err != nil {
		return fmt.Errorf("%s: %w", e.Name, err)
	}
	return w.Close()
}

// scanImage reads the image of the binpkg at path on its own, for a
// package whose metadata was not known before its image was read.
func scanImage(path string, lim xpak.Limits, m *xpak.Metadata) (*imageScan, error) {
	s := newImageScan(m)
	if err := xpak.WalkImageFile(path, lim, s.entry); err != nil {
		return nil, err
	}
	return s, nil
}

// toolchainOf states the build environment of a build whose image says
// img. Only an image with ELF objects was shaped by a compiler, binutils
// and a C library; a data-only build states none, so honest builders
// that differ only there are one class. The compiler is the one the
// image names (.comment); portage strips that from programs and
// libraries, so otherwise it is the gcc installed here, like binutils and
// the C library: each only when the vdb shows it was in place before the
// build (see installed).
func (ob *Builds) toolchainOf(img identity.ImageToolchain, m *xpak.Metadata) toolchainFacts {
	tf := toolchainFacts{BuildDir: img.BuildPrefix}
	if !img.ELF {
		return tf
	}
	sys := installedSystem{vdb: ob.vdb, root: vdbRoot(ob.vdb), chost: m.Get("CHOST"), built: time.Unix(m.BuildTime(), 0)}
	if m.BuildTime() <= 0 {
		sys.built = time.Time{} // unknown: nothing installed can be shown to predate it
	}
	tf.GCC = img.GCC
	if tf.GCC == "" {
		// Portage records CC and CXX in the metadata when they are set.
		tf.GCC = sys.gcc(cmp.Or(m.Get("CC"), m.Get("CXX")))
	}
	tf.Binutils = sys.binutils()
	tf.Libc = sys.libc()
	return tf
}

// vdbRoot is the root the vdb belongs to (ROOT/var/db/pkg), where the
// toolchain selections live in etc/env.d; "/" for any other vdb path.
func vdbRoot(vdb string) string {
	clean := filepath.Clean(vdb)
	if root, ok := strings.CutSuffix(clean, filepath.FromSlash("/var/db/pkg")); ok {
		if root == "" {
			return "/"
		}
		return root
	}
	return "/"
}

// installedSystem answers which toolchain package built a binpkg, from
// the vdb: the installed version, when it is the only one of its kind or
// the one gcc-config / binutils-config select, and only when it was
// merged (and selected) before the binpkg was built. A toolchain merged
// since was not the one; then the answer is "" (unknown), never a guess.
type installedSystem struct {
	vdb, root, chost string
	built            time.Time // the binpkg's BUILD_TIME; zero when unknown
}

// installedPkg is one vdb entry of a package name.
type installedPkg struct {
	version string // as the vdb names it, revision included ("2.42-r1")
	dir     string
}

// versions lists the installed versions of category/pn.
func (s installedSystem) versions(category, pn string) []installedPkg {
	ents, err := os.ReadDir(filepath.Join(s.vdb, category))
	if err != nil {
		return nil
	}
	var out []installedPkg
	for _, e := range ents {
		v, ok := strings.CutPrefix(e.Name(), pn+"-")
		if !e.IsDir() || !ok || v == "" || v[0] < '0' || v[0] > '9' {
			continue
		}
		out = append(out, installedPkg{version: v, dir: filepath.Join(s.vdb, category, e.Name())})
	}
	return out
}

// before reports whether path (a vdb entry, a selection file) was last
// written before the binpkg was built.
func (s installedSystem) before(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !s.built.IsZero() && !st.ModTime().After(s.built)
}

// merged returns p's version if its vdb entry predates the build.
func (s installedSystem) merged(p installedPkg) string {
	if s.before(filepath.Join(p.dir, "CONTENTS")) {
		return p.version
	}
	return ""
}

// selected returns the CURRENT= value of a toolchain selection file
// (etc/env.d/gcc/config-CHOST, etc/env.d/binutils/config-CHOST); "" when
// there is none or it changed after the build.
func (s installedSystem) selected(tool string) string {
	if s.chost == "" {
		return ""
	}
	path := filepath.Join(s.root, "etc/env.d", tool, "config-"+s.chost)
	if !s.before(path) {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "CURRENT="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// pick is the one of ps whose version has the prefix slot (ending there
// or followed by a separator); "" when none or several do.
func pick(ps []installedPkg, slot string) (installedPkg, bool) {
	var found []installedPkg
	for _, p := range ps {
		if rest, ok := strings.CutPrefix(p.version, slot); ok && (rest == "" || strings.ContainsRune(".-_", rune(rest[0]))) {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		return installedPkg{}, false
	}
	return found[0], true
}

// ccSlot matches CC (or CXX) naming gcc or one of its slots: gcc,
// gcc-13, x86_64-pc-linux-gnu-gcc-13, g++-13.
var ccSlot = regexp.MustCompile(`^(?:[A-Za-z0-9_.]+-)*(?:gcc|g\+\+)(?:-([0-9]+))?$`)

// gcc is the gcc that built the binpkg: the slot cc (the build's CC or
// CXX, "" when unset) names, else the one gcc-config selects, else the
// only one.
func (s installedSystem) gcc(cc string) string {
	ps := s.versions("sys-devel", "gcc")
	if strings.TrimSpace(cc) != "" {
		m := ccSlot.FindStringSubmatch(filepath.Base(strings.Fields(cc)[0]))
		if m == nil {
			return "" // another compiler (clang, a wrapper): not a gcc of the vdb
		}
		if m[1] != "" {
			if p, ok := pick(ps, m[1]); ok {
				return s.merged(p)
			}
			return ""
		}
	}
	if len(ps) == 1 {
		return s.merged(ps[0])
	}
	// gcc-config names a profile CHOST-VERSION, the version being the
	// slot ("13") or, in older installs, the full version.
	cur := strings.TrimPrefix(s.selected("gcc"), s.chost+"-")
	if cur == "" {
		return ""
	}
	if p, ok := pick(ps, cur); ok {
		return s.merged(p)
	}
	return ""
}

// binutils is the binutils that assembled and linked the binpkg.
func (s installedSystem) binutils() string {
	ps := s.versions("sys-devel", "binutils")
	if len(ps) == 1 {
		return s.merged(ps[0])
	}
	if cur := s.selected("binutils"); cur != "" {
		if p, ok := pick(ps, cur); ok {
			return s.merged(p)
		}
	}
	return ""
}

// libc is the C library the binpkg compiled against: glibc-VERSION, or
// musl-VERSION for a musl CHOST.
func (s installedSystem) libc() string {
	name := "glibc"
	if strings.Contains(s.chost, "musl") {
		name = "musl"
	}
	ps := s.versions("sys-libs", name)
	if len(ps) != 1 {
		return ""
	}
	if v := s.merged(ps[0]); v != "" {
		return name + "-" + v
	}
	return ""
}
