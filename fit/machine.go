package fit

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
)

// Installed is one package of the vdb: what a slot-operator dependency is
// checked against.
type Installed struct {
	CPV     string // "dev-libs/libfoo-2.1"
	Slot    string // "0"
	SubSlot string // "2.1"; the slot when the package has no subslot
}

// Machine is what the system portage installs onto offers a build: its
// installed packages and the sonames they provide, its glibc and its CPU.
// LoadMachine reads it; tests build one directly. Fields must not change
// once Fits has been called.
type Machine struct {
	// Installed is every package in the vdb.
	Installed []Installed
	// Provides is the sonames installed packages provide per ABI (their
	// PROVIDES: "x86_64" → "libfoo.so.2" …), as portage writes the ABI
	// keys.
	Provides map[string][]string
	// Glibc is the highest glibc symbol version the system's libc.so.6
	// (and libm.so.6 beside it) defines, e.g. "GLIBC_2.38"; "" when no
	// glibc was found, and then no build needing one fits.
	Glibc string
	// CPUFlags are the CPU's flags as /proc/cpuinfo names them, sorted.
	CPUFlags []string
	// X86Level is the CPU's x86-64 level (X86Level(CPUFlags)): 1..4, 0 for
	// none.
	X86Level int
	// March, when set, tells which extensions (gcc's -m names) a named
	// -march enables (GCCMarch asks gcc). Without it a build's -march=NAME
	// other than x86-64[-vN] is judged by its -m flags alone.
	March func(march string) ([]string, error)

	indexOnce sync.Once
	index     *machineIndex
	fpOnce    sync.Once
	fp        [32]byte
}

// Fingerprint identifies what Fits reads of m, March aside (it asks the
// same gcc every time): machines with one fingerprint fit the same builds,
// so a listing fitted to one is right for the other. The daemon reloads
// the machine every few seconds; comparing fingerprints tells whether
// anything portage installs onto changed. Computed once.
func (m *Machine) Fingerprint() [32]byte {
	m.fpOnce.Do(func() {
		h := sha256.New()
		w := func(ss ...string) {
			for _, s := range ss {
				h.Write([]byte(strconv.Itoa(len(s)) + ":" + s))
			}
		}
		w("installed", strconv.Itoa(len(m.Installed)))
		for _, p := range m.Installed {
			w(p.CPV, p.Slot, p.SubSlot)
		}
		w("provides", strconv.Itoa(len(m.Provides)))
		for _, abi := range slices.Sorted(maps.Keys(m.Provides)) {
			w(abi, strconv.Itoa(len(m.Provides[abi])))
			w(m.Provides[abi]...)
		}
		w("glibc", m.Glibc, "cpu", strconv.Itoa(len(m.CPUFlags)))
		w(m.CPUFlags...)
		w("level", strconv.Itoa(m.X86Level))
		m.fp = [32]byte(h.Sum(nil))
	})
	return m.fp
}

// machineIndex is Machine's lists as sets, built once.
type machineIndex struct {
	sonames map[string]map[string]bool // ABI → soname
	slots   map[string][]Installed     // cat/pn → installed
	flags   map[string]bool
}

func (m *Machine) indexed() *machineIndex {
	m.indexOnce.Do(func() {
		ix := &machineIndex{sonames: map[string]map[string]bool{}, slots: map[string][]Installed{}, flags: map[string]bool{}}
		for abi, libs := range m.Provides {
			addSonames(ix.sonames, abi, libs)
		}
		for _, p := range m.Installed {
			if cp, _, ok := splitCPV(p.CPV); ok {
				ix.slots[cp] = append(ix.slots[cp], p)
			}
		}
		for _, f := range m.CPUFlags {
			ix.flags[f] = true
		}
		m.index = ix
	})
	return m.index
}

func addSonames(dst map[string]map[string]bool, abi string, libs []string) {
	if dst[abi] == nil {
		dst[abi] = map[string]bool{}
	}
	for _, l := range libs {
		dst[abi][l] = true
	}
}

// cpuinfoPath is where the running kernel describes the CPU.
const cpuinfoPath = "/proc/cpuinfo"

// LoadMachine reads the machine portage installs onto: ROOT root ("" or
// "/" for this system) with its vdb at vdb ("" for root/var/db/pkg). A
// vdb that does not exist is an empty machine (nothing installed), not an
// error. The CPU is the running one (/proc/cpuinfo), whatever root is.
// March is left unset.
func LoadMachine(root, vdb string) (*Machine, error) {
	return loadMachine(root, vdb, cpuinfoPath)
}

func loadMachine(root, vdb, cpuinfo string) (*Machine, error) {
	if root == "" {
		root = "/"
	}
	if vdb == "" {
		vdb = filepath.Join(root, "var/db/pkg")
	}
	m := &Machine{Provides: map[string][]string{}}
	glibcFiles, err := m.readVDB(vdb)
	if err != nil {
		return nil, err
	}
	// Where the vdb does not say (a machine without Gentoo, the tests on
	// Debian), the usual places.
	glibcFiles = append(glibcFiles, "/lib64/libc.so.6", "/lib/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6")
	for _, p := range glibcFiles {
		full, err := inRoot(root, p)
		if err != nil {
			continue
		}
		v, err := definedGlibc(full)
		if err != nil {
			continue // not there, or no ELF: the next candidate
		}
		m.Glibc = v
		break
	}
	if m.CPUFlags, err = ReadCPUFlags(cpuinfo); err != nil {
		return nil, err
	}
	m.X86Level = X86Level(m.CPUFlags)
	return m, nil
}

// readVDB reads every package's SLOT and PROVIDES, and returns the
// libc.so.6 paths of sys-libs/glibc's CONTENTS.
func (m *Machine) readVDB(vdb string) (glibc []string, err error) {
	cats, err := os.ReadDir(vdb)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vdb: %w", err)
	}
	for _, c := range cats {
		if !c.IsDir() || strings.HasPrefix(c.Name(), ".") {
			continue
		}
		pkgs, err := os.ReadDir(filepath.Join(vdb, c.Name()))
		if err != nil {
			return nil, fmt.Errorf("vdb: %w", err)
		}
		for _, p := range pkgs {
			// -MERGING-* is a merge in progress, not an installed package.
			if !p.IsDir() || strings.HasPrefix(p.Name(), ".") || strings.HasPrefix(p.Name(), "-MERGING-") {
				continue
			}
			dir := filepath.Join(vdb, c.Name(), p.Name())
			cpv := c.Name() + "/" + p.Name()
			slot, err := readVDBFile(dir, "SLOT")
			if err != nil {
				return nil, err
			}
			inst := Installed{CPV: cpv}
			inst.Slot, inst.SubSlot = splitSlot(slot)
			m.Installed = append(m.Installed, inst)
			provides, err := readVDBFile(dir, "PROVIDES")
			if err != nil {
				return nil, err
			}
			// A PROVIDES portage could not have written provides nothing
			// we can name: fewer sonames only means fewer builds fit.
			if libs, err := identity.ParseRequires(provides); err == nil {
				for abi, l := range libs {
					m.Provides[abi] = append(m.Provides[abi], l...)
				}
			}
			if cp, _, ok := splitCPV(cpv); ok && cp == "sys-libs/glibc" {
				files, err := glibcContents(filepath.Join(dir, "CONTENTS"))
				if err != nil {
					return nil, err
				}
				glibc = append(glibc, files...)
			}
		}
	}
	for abi, libs := range m.Provides {
		slices.Sort(libs)
		m.Provides[abi] = slices.Compact(libs)
	}
	return glibc, nil
}

// readVDBFile returns one vdb file's content without surrounding space,
// "" when the package has none.
func readVDBFile(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("vdb: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// splitSlot splits "0/2.1" into slot and subslot; a slot without one is
// its own subslot, and an empty SLOT is portage's default "0".
func splitSlot(s string) (slot, subslot string) {
	slot, subslot, ok := strings.Cut(strings.TrimSpace(s), "/")
	if slot == "" {
		slot = "0"
	}
	if !ok || subslot == "" {
		subslot = slot
	}
	return slot, subslot
}

// glibcContents returns the libc.so.6 paths a CONTENTS file lists ("obj
// /lib64/libc.so.6 <md5> <mtime>", "sym /lib64/libc.so.6 -> … <mtime>"),
// relative to ROOT.
func glibcContents(contents string) ([]string, error) {
	f, err := os.Open(contents)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vdb: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		var p string
		switch kind {
		case "obj": // obj PATH MD5 MTIME; PATH may hold spaces
			f := strings.Fields(rest)
			if len(f) < 3 {
				continue
			}
			p = strings.TrimSuffix(rest, " "+f[len(f)-2]+" "+f[len(f)-1])
		case "sym": // sym PATH -> TARGET MTIME
			p, _, _ = strings.Cut(rest, " -> ")
		default:
			continue
		}
		if path.Base(p) == "libc.so.6" {
			out = append(out, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("vdb: %s: %w", contents, err)
	}
	return out, nil
}

// inRoot resolves p (absolute, as seen from root) to a path on this
// system, following symlinks as the system under root sees them:
// absolute targets stay under root.
func inRoot(root, p string) (string, error) {
	p = path.Clean("/" + p)
	for range 16 {
		full := filepath.Join(root, filepath.FromSlash(p))
		target, err := os.Readlink(full)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", err
			}
			// Not a symlink itself; a symlinked parent directory is
			// followed by the kernel, which is right for root "/" and
			// only for relative links elsewhere.
			return full, nil
		}
		if path.IsAbs(target) {
			p = path.Clean(target)
		} else {
			p = path.Join(path.Dir(p), target)
		}
	}
	return "", fmt.Errorf("%s: too many symlinks", p)
}

// definedGlibc is the highest GLIBC_ version libc.so.6 at p defines
// (.gnu.version_d), together with libm.so.6 beside it: a glibc release
// that adds symbols only to libm defines its version there.
func definedGlibc(p string) (string, error) {
	best, err := definedVersions(p)
	if err != nil {
		return "", err
	}
	if v, err := definedVersions(filepath.Join(filepath.Dir(p), "libm.so.6")); err == nil && compareGlibc(v, best) > 0 {
		best = v
	}
	if best == "" {
		return "", fmt.Errorf("%s defines no GLIBC_ version", p)
	}
	return best, nil
}

func definedVersions(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	defs, err := f.DynamicVersions()
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	best := ""
	for _, d := range defs {
		best = maxGlibc(best, d.Name)
	}
	return best, nil
}
