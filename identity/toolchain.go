package identity

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ImageToolchain is what an image's own bytes say about the toolchain
// that shaped them. Two honest builds of one build key differ exactly
// where their build environments left a mark in these bytes, so the
// daemon states only what it finds here (and, for ELF images, the
// toolchain it has installed): a data-only package is one class for
// every builder.
type ImageToolchain struct {
	// ELF is whether a regular file of the image is an ELF object or a
	// static archive of them, not installed prebuilt: then a compiler,
	// an assembler and a linker shaped the bytes.
	ELF bool
	// GCC is the highest GCC version the .comment sections of the image's
	// ELF objects name ("GCC: (Gentoo 13.2.1_p20240210 p13) 13.2.1" gives
	// "13.2.1"); "" when none does. Portage strips .comment from
	// installed programs and libraries, so most images name one only in
	// static archives, split debug files or unstripped builds.
	GCC string
	// BuildPrefix is portage's build prefix (PORTAGE_TMPDIR + "/portage",
	// e.g. "/var/tmp/portage") as compiled into the image's files: found
	// before "/portage/CATEGORY/PF/", the build directory portage makes
	// for the package; "" when no file holds the package's build
	// directory. Several prefixes give the bytewise smallest.
	BuildPrefix string
}

// Bounds of the toolchain scan: what one file can make it hold.
const (
	// maxCommentString caps a captured .comment string.
	maxCommentString = 256
	// maxELFHits caps the candidate strings and section names kept per
	// ELF object until its section headers arrive; more are ignored.
	maxELFHits = 256
	// maxSectionTable caps the section header table captured per object.
	maxSectionTable = 1 << 20
	// maxBuildPrefix is the longest build prefix looked for (PATH_MAX).
	maxBuildPrefix = 4096
	// maxBuildPrefixes caps the distinct prefixes kept.
	maxBuildPrefixes = 16
)

var (
	gccMark     = []byte("GCC: (")
	commentName = []byte(".comment\x00")
	arMagic     = []byte("!<arch>\n")
)

// ToolchainScanner derives an ImageToolchain from the regular files of
// an image as they stream by, each file once and in full: File gives the
// writer one file's content goes to. The .comment strings of an ELF
// program or library are looked for only after its loaded segments
// (linkers put the non-alloc sections there; a relocatable object is
// searched whole), the build directory in every byte. Memory is bounded per file (a few
// hundred captured strings, the section header table up to 1 MiB, a
// 4 KiB look-behind), whatever the file's size. The result does not
// depend on how the content is cut into writes. Not safe for concurrent
// use.
type ToolchainScanner struct {
	buildDir []byte // "/portage/CATEGORY/PF/"
	prebuilt *regexp.Regexp
	res      ImageToolchain
	prefixes []string
}

// NewToolchainScanner scans the image of the package category/pf (the
// binpkg's CATEGORY and PF metadata), which portage built in
// PORTAGE_TMPDIR/portage/category/pf. With either empty the build
// directory is not looked for.
func NewToolchainScanner(category, pf string) *ToolchainScanner {
	s := &ToolchainScanner{}
	if category != "" && pf != "" && !strings.ContainsAny(category+pf, "/\x00") {
		s.buildDir = []byte("/portage/" + category + "/" + pf + "/")
	}
	return s
}

// Prebuilt names the files the ebuild installs prebuilt (QA_PREBUILT,
// which portage records in the binpkg's metadata): fnmatch patterns
// relative to the image root whose "*" spans directories. The local
// toolchain did not shape them, so their ELF objects count for nothing.
func (s *ToolchainScanner) Prebuilt(patterns string) {
	var alts []string
	for _, p := range strings.Fields(patterns) {
		var re strings.Builder
		for _, c := range strings.TrimLeft(p, "/") {
			switch c {
			case '*':
				re.WriteString(".*")
			case '?':
				re.WriteString(".")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		alts = append(alts, re.String())
	}
	if len(alts) > 0 {
		s.prebuilt = regexp.MustCompile("^(?:" + strings.Join(alts, "|") + ")$")
	}
}

// File returns the writer the whole content of the regular file name
// (its image path, "usr/bin/hello") is written to; Close it after the
// last byte.
func (s *ToolchainScanner) File(name string) io.WriteCloser {
	f := &toolchainFile{s: s, prebuilt: s.prebuilt != nil && s.prebuilt.MatchString(strings.TrimLeft(name, "/"))}
	if s.buildDir != nil {
		f.dir = &prefixSearch{s: s, find: finder{pat: s.buildDir}}
	}
	return f
}

// Result is what the files scanned so far say together.
func (s *ToolchainScanner) Result() ImageToolchain {
	r := s.res
	if len(s.prefixes) > 0 {
		r.BuildPrefix = slices.Min(s.prefixes) + "/portage"
	}
	return r
}

func (s *ToolchainScanner) addGCC(v string) {
	s.res.ELF = true
	if v != "" && (s.res.GCC == "" || compareDotted(v, s.res.GCC) > 0) {
		s.res.GCC = v
	}
}

func (s *ToolchainScanner) addPrefix(p string) {
	if !slices.Contains(s.prefixes, p) && len(s.prefixes) < maxBuildPrefixes {
		s.prefixes = append(s.prefixes, p)
	}
}

// toolchainFile is one file: its first bytes decide whether it is an ELF
// object, a static archive or neither; every byte goes through the
// build-directory search.
type toolchainFile struct {
	s        *ToolchainScanner
	prebuilt bool   // ELF objects here were not made by the local toolchain
	head     []byte // up to len(arMagic) bytes, until the kind is known
	kind     int    // 0 undecided, 1 ELF, 2 archive, 3 neither
	elf      *elfComments
	ar       *arScan
	dir      *prefixSearch
}

func (f *toolchainFile) Write(p []byte) (int, error) {
	if f.dir != nil {
		f.dir.write(p)
	}
	if f.kind == 0 {
		n := min(len(arMagic)-len(f.head), len(p))
		f.head = append(f.head, p[:n]...)
		if len(f.head) < len(arMagic) {
			return len(p), nil
		}
		f.decide()
		f.feed(f.head)
		f.feed(p[n:])
		return len(p), nil
	}
	f.feed(p)
	return len(p), nil
}

func (f *toolchainFile) decide() {
	switch {
	case f.prebuilt:
		f.kind = 3
	case bytes.HasPrefix(f.head, []byte(elf.ELFMAG)):
		f.kind, f.elf = 1, &elfComments{}
	case bytes.Equal(f.head, arMagic):
		f.kind, f.ar = 2, &arScan{s: f.s, skip: int64(len(arMagic))}
	default:
		f.kind = 3
	}
}

func (f *toolchainFile) feed(p []byte) {
	switch f.kind {
	case 1:
		f.elf.write(p)
	case 2:
		f.ar.write(p)
	}
}

func (f *toolchainFile) Close() error {
	if f.kind == 0 {
		f.decide() // shorter than an archive's magic
		f.feed(f.head)
	}
	switch f.kind {
	case 1:
		if v, ok := f.elf.finish(); ok {
			f.s.addGCC(v)
		}
	case 2:
		f.ar.finish()
	}
	return nil
}

// arScan reads a static archive ("!<arch>\n", 60-byte member headers,
// members padded to even sizes) and hands each member to its own
// elfComments.
type arScan struct {
	s      *ToolchainScanner
	skip   int64  // bytes still to skip (magic, padding, tables)
	hdr    []byte // a member header being collected
	left   int64  // bytes of the current member still to come
	odd    bool   // the current member's size is odd: one byte of padding follows
	member *elfComments
	bad    bool
}

func (a *arScan) write(p []byte) {
	for len(p) > 0 && !a.bad {
		switch {
		case a.skip > 0:
			n := min(a.skip, int64(len(p)))
			a.skip -= n
			p = p[n:]
		case a.left > 0:
			n := min(a.left, int64(len(p)))
			if a.member != nil {
				a.member.write(p[:n])
			}
			a.left -= n
			p = p[n:]
			if a.left == 0 {
				a.endMember()
			}
		default:
			n := min(60-len(a.hdr), len(p))
			a.hdr = append(a.hdr, p[:n]...)
			p = p[n:]
			if len(a.hdr) == 60 {
				a.startMember()
			}
		}
	}
}

func (a *arScan) startMember() {
	h := a.hdr
	a.hdr = a.hdr[:0]
	if string(h[58:60]) != "`\n" {
		a.bad = true
		return
	}
	size, err := strconv.ParseInt(strings.TrimSpace(string(h[48:58])), 10, 64)
	if err != nil || size < 0 {
		a.bad = true
		return
	}
	name := strings.TrimSpace(string(h[:16]))
	a.left, a.odd = size, size%2 == 1
	// The symbol tables and the long-name table are no objects.
	if name != "/" && name != "//" && name != "/SYM64/" && name != "__.SYMDEF" {
		a.member = &elfComments{}
	}
	if size == 0 {
		a.endMember()
	}
}

func (a *arScan) endMember() {
	if a.member != nil {
		if v, ok := a.member.finish(); ok {
			a.s.addGCC(v)
		}
		a.member = nil
	}
	if a.odd {
		a.skip = 1
	}
}

func (a *arScan) finish() {
	if a.member != nil && a.left == 0 {
		a.endMember()
	}
}

// elfComments finds the GCC versions of one ELF object's .comment
// section in one forward pass. The section header table lies at the end
// of the object, after .comment, so the pass keeps every "GCC: (" string
// and every ".comment" name it passes, with their offsets, and captures
// the table when it gets there; finish keeps the strings that lie inside
// the section named .comment.
type elfComments struct {
	off      int64
	hdr      []byte // the ELF header, up to 64 bytes
	parsed   bool
	bo       binary.ByteOrder
	is64     bool
	shoff    int64
	shnum    int
	shentsz  int
	shstrndx int
	table    []byte // the section header table as far as it came by
	phoff    int64
	progs    []byte // the program header table as far as it came by
	progsz   int    // one program header's size
	skipTo   int64  // the end of the loaded segments: .comment lies beyond
	searched int64  // the finders have seen every byte before this offset
	gcc      finder
	names    finder
	open     []*commentString
	strs     []commentString
	nameOffs []int64
}

type commentString struct {
	start int64 // offset of the first byte after "GCC: ("
	text  []byte
	done  bool
}

func (e *elfComments) write(p []byte) {
	if e.gcc.pat == nil {
		e.gcc.pat, e.names.pat = gccMark, commentName
	}
	if !e.parsed {
		n := min(64-len(e.hdr), len(p))
		e.hdr = append(e.hdr, p[:n]...)
		if len(e.hdr) == 64 {
			e.parseHeader()
		}
	}
	if e.parsed {
		e.table = capture(e.table, e.shoff, p, e.off)
		if e.progs != nil && len(e.progs) < cap(e.progs) {
			if e.progs = capture(e.progs, e.phoff, p, e.off); len(e.progs) == cap(e.progs) {
				e.loadedEnd()
			}
		}
	}
	start := max(e.off, e.skipTo)
	if end := e.off + int64(len(p)); start < end {
		if start != e.searched {
			e.gcc.carry, e.names.carry = e.gcc.carry[:0], e.names.carry[:0]
		}
		e.search(p[start-e.off:], start)
		e.searched = end
	}
	e.off += int64(len(p))
}

// capture appends to buf (the table at start, cap(buf) bytes long) the
// bytes of p (at offset off) that continue it.
func capture(buf []byte, start int64, p []byte, off int64) []byte {
	if buf == nil {
		return nil
	}
	next := start + int64(len(buf))
	lo, hi := max(off, next), min(off+int64(len(p)), start+int64(cap(buf)))
	if lo < hi && lo == next {
		buf = append(buf, p[lo-off:hi-off]...)
	}
	return buf
}

// loadedEnd reads the program headers: the non-alloc sections (.comment
// among them) lie after every loaded segment, where linkers put them, so
// the strings are looked for only from there on and those found before
// are dropped. Objects without program headers (.o) are searched whole.
func (e *elfComments) loadedEnd() {
	var end int64
	for i := 0; i+e.progsz <= len(e.progs); i += e.progsz {
		b := bytes.NewReader(e.progs[i : i+e.progsz])
		var p elf.Prog64
		if e.is64 {
			if binary.Read(b, e.bo, &p) != nil {
				return
			}
		} else {
			var p32 elf.Prog32
			if binary.Read(b, e.bo, &p32) != nil {
				return
			}
			p = elf.Prog64{Type: p32.Type, Off: uint64(p32.Off), Filesz: uint64(p32.Filesz)}
		}
		if elf.ProgType(p.Type) == elf.PT_LOAD && p.Off+p.Filesz > uint64(end) && p.Off+p.Filesz < 1<<62 {
			end = int64(p.Off + p.Filesz)
		}
	}
	e.skipTo = end
	e.strs = slices.DeleteFunc(e.strs, func(c commentString) bool { return c.start-int64(len(gccMark)) < end })
	e.open = slices.DeleteFunc(e.open, func(c *commentString) bool { return c.start-int64(len(gccMark)) < end })
	e.nameOffs = slices.DeleteFunc(e.nameOffs, func(at int64) bool { return at < end })
}

// search runs the finders over p, at offset off, and continues the open
// strings.
func (e *elfComments) search(p []byte, off int64) {
	e.gcc.write(p, off, func(at int64) {
		if len(e.strs)+len(e.open) < maxELFHits {
			e.open = append(e.open, &commentString{start: at + int64(len(gccMark))})
		}
	})
	e.names.write(p, off, func(at int64) {
		if len(e.nameOffs) < maxELFHits {
			e.nameOffs = append(e.nameOffs, at)
		}
	})
	still := e.open[:0]
	for _, c := range e.open {
		c.take(p, off)
		if c.done {
			e.strs = append(e.strs, *c)
		} else {
			still = append(still, c)
		}
	}
	clear(e.open[len(still):])
	e.open = still
}

// take appends the bytes of p (at offset off) that continue the string,
// up to its NUL or maxCommentString bytes.
func (c *commentString) take(p []byte, off int64) {
	i := c.start + int64(len(c.text)) - off
	if i < 0 || i >= int64(len(p)) {
		return
	}
	rest := p[i:]
	if z := bytes.IndexByte(rest, 0); z >= 0 {
		rest, c.done = rest[:z], true
	}
	if room := maxCommentString - len(c.text); len(rest) >= room {
		rest, c.done = rest[:room], true
	}
	c.text = append(c.text, rest...)
}

func (e *elfComments) parseHeader() {
	e.parsed = true
	switch elf.Data(e.hdr[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		e.bo = binary.LittleEndian
	case elf.ELFDATA2MSB:
		e.bo = binary.BigEndian
	default:
		return
	}
	r := bytes.NewReader(e.hdr)
	switch elf.Class(e.hdr[elf.EI_CLASS]) {
	case elf.ELFCLASS64:
		var h elf.Header64
		if binary.Read(r, e.bo, &h) != nil || h.Shentsize != 64 {
			return
		}
		e.is64, e.shoff, e.shnum, e.shentsz, e.shstrndx = true, int64(h.Shoff), int(h.Shnum), 64, int(h.Shstrndx)
		e.progsFrom(int64(h.Phoff), int(h.Phnum), int(h.Phentsize), 56)
	case elf.ELFCLASS32:
		var h elf.Header32
		if binary.Read(r, e.bo, &h) != nil || h.Shentsize != 40 {
			return
		}
		e.shoff, e.shnum, e.shentsz, e.shstrndx = int64(h.Shoff), int(h.Shnum), 40, int(h.Shstrndx)
		e.progsFrom(int64(h.Phoff), int(h.Phnum), int(h.Phentsize), 32)
	default:
		return
	}
	// Extended numbering (shnum 0, more than 65279 sections) is not
	// followed: such objects name no compiler here.
	if size := e.shnum * e.shentsz; e.shoff >= int64(len(e.hdr)) && size > 0 && size <= maxSectionTable && e.shstrndx < e.shnum {
		e.table = make([]byte, 0, size)
	}
}

// progsFrom prepares the capture of the program header table.
func (e *elfComments) progsFrom(off int64, n, entsize, want int) {
	if n > 0 && entsize == want && off >= int64(len(e.hdr)) && n*entsize <= 64<<10 {
		e.phoff, e.progsz, e.progs = off, entsize, make([]byte, 0, n*entsize)
	}
}

// finish returns the highest GCC version the object's .comment names;
// ok is false when the stream was no ELF object at all.
func (e *elfComments) finish() (version string, ok bool) {
	if len(e.hdr) < 4 || !bytes.Equal(e.hdr[:4], []byte(elf.ELFMAG)) {
		return "", false
	}
	if e.table == nil || len(e.table) < cap(e.table) {
		return "", true
	}
	sections := make([]elf.Section64, e.shnum)
	for i := range sections {
		b := bytes.NewReader(e.table[i*e.shentsz : (i+1)*e.shentsz])
		if e.is64 {
			if binary.Read(b, e.bo, &sections[i]) != nil {
				return "", true
			}
			continue
		}
		var s elf.Section32
		if binary.Read(b, e.bo, &s) != nil {
			return "", true
		}
		sections[i] = elf.Section64{Name: s.Name, Type: s.Type, Off: uint64(s.Off), Size: uint64(s.Size)}
	}
	strtab := sections[e.shstrndx]
	if elf.SectionType(strtab.Type) != elf.SHT_STRTAB {
		return "", true
	}
	for _, s := range sections {
		if elf.SectionType(s.Type) != elf.SHT_PROGBITS || uint64(s.Name) >= strtab.Size ||
			!slices.Contains(e.nameOffs, int64(strtab.Off+uint64(s.Name))) {
			continue
		}
		lo, hi := int64(s.Off), int64(s.Off+s.Size)
		for _, c := range e.strs {
			if c.start-int64(len(gccMark)) >= lo && c.start+int64(len(c.text)) < hi {
				if v := gccVersion(string(c.text)); v != "" && (version == "" || compareDotted(v, version) > 0) {
					version = v
				}
			}
		}
	}
	return version, true
}

// gccVersion is the version in the rest of a .comment string after
// "GCC: (": "Gentoo 13.2.1_p20240210 p13) 13.2.1 20240210" gives
// "13.2.1"; "" when it names none.
func gccVersion(s string) string {
	i := strings.LastIndex(s, ") ")
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+2:])
	if len(f) == 0 || !dottedNumber(f[0]) {
		return ""
	}
	return f[0]
}

func dottedNumber(s string) bool {
	for p := range strings.SplitSeq(s, ".") {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// compareDotted compares dotted decimal versions numerically.
func compareDotted(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return strings.Compare(a, b)
}

// finder reports every occurrence of pat in a stream cut into writes,
// by its offset, including those that straddle two writes.
type finder struct {
	pat   []byte
	carry []byte // the last len(pat)-1 bytes before the next write
	buf   []byte
}

func (f *finder) write(p []byte, off int64, hit func(at int64)) {
	if k := len(f.carry); k > 0 {
		f.buf = append(append(f.buf[:0], f.carry...), p[:min(len(p), len(f.pat)-1)]...)
		for i := 0; ; {
			j := bytes.Index(f.buf[i:], f.pat)
			if j < 0 || i+j >= k {
				break
			}
			hit(off - int64(k) + int64(i+j))
			i += j + 1
		}
	}
	for i := 0; ; {
		j := bytes.Index(p[i:], f.pat)
		if j < 0 {
			break
		}
		hit(off + int64(i+j))
		i += j + 1
	}
	keep := len(f.pat) - 1
	if len(p) >= keep {
		f.carry = append(f.carry[:0], p[len(p)-keep:]...)
	} else {
		f.carry = append(f.carry, p...)
		f.carry = f.carry[max(0, len(f.carry)-keep):]
	}
}

// prefixSearch finds the package's build directory in one file and
// reads the prefix before it, looking back at most maxBuildPrefix bytes.
type prefixSearch struct {
	s    *ToolchainScanner
	find finder
	off  int64
	tail []byte // the last bytes before the next write
}

func (d *prefixSearch) write(p []byte) {
	d.find.write(p, d.off, func(at int64) {
		var before []byte
		switch i := at - d.off; {
		case i < 0:
			before = d.tail[:int64(len(d.tail))+i]
		case i >= maxBuildPrefix:
			before = p[i-maxBuildPrefix : i]
		default:
			before = append(d.tail[:len(d.tail):len(d.tail)], p[:i]...)
		}
		d.s.addPrefix(buildPrefixBefore(before))
	})
	d.off += int64(len(p))
	keep := maxBuildPrefix + len(d.find.pat)
	if len(p) >= keep {
		d.tail = append(d.tail[:0], p[len(p)-keep:]...)
	} else {
		d.tail = append(d.tail, p...)
		if len(d.tail) > keep {
			d.tail = append(d.tail[:0], d.tail[len(d.tail)-keep:]...)
		}
	}
}

// buildPrefixBefore is PORTAGE_TMPDIR as written just before
// "/portage/CATEGORY/PF/": the path bytes before it, from their first
// slash ("-I/var/tmp" gives "/var/tmp"); "" for PORTAGE_TMPDIR=/.
func buildPrefixBefore(b []byte) string {
	i := len(b)
	for i > 0 && len(b)-i < maxBuildPrefix && pathByte(b[i-1]) {
		i--
	}
	run := b[i:]
	if j := bytes.IndexByte(run, '/'); j >= 0 {
		return string(run[j:])
	}
	return ""
}

// pathByte reports whether c can be part of a path as build systems
// write it into code, scripts and libtool files.
func pathByte(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune("\"'`=:;,()<>[]{}|&*?$\\", rune(c))
}
