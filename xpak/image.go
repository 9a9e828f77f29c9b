package xpak

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EntryType is an image entry's type letter, exactly as image digest v1
// writes it.
type EntryType byte

// The entry types image digest v1 knows; anything else is ErrUnknownType.
const (
	TypeFile     EntryType = 'f'
	TypeDir      EntryType = 'd'
	TypeSymlink  EntryType = 'l'
	TypeHardlink EntryType = 'h'
	TypeChar     EntryType = 'c'
	TypeBlock    EntryType = 'b'
	TypeFIFO     EntryType = 'p'
)

// implicitDir marks, in the walker's path table, a directory that only
// exists because a stored entry lives under it.
const implicitDir EntryType = 0

// maxNameLen bounds an entry name or link target (Linux PATH_MAX).
const maxNameLen = 4096

// maxOwnerLen bounds uname/gname (ustar allows 32; PAX allows anything).
const maxOwnerLen = 256

// imageDigestPrefix starts every image digest v1 preimage.
const imageDigestPrefix = "gentoo-p2p image v1\n"

// ImageEntry is one validated image tar entry with its name normalised as
// image digest v1 defines (no "./" or "image/" prefix, no trailing slash),
// for callers that re-pack an image (the gateway writes it into a GPKG).
type ImageEntry struct {
	Name string // normalised path, e.g. "usr/bin/hello"
	Type EntryType
	// Mode is the permission bits including setuid/setgid/sticky
	// (& 07777).
	Mode         int64
	Uid, Gid     int
	Uname, Gname string // as stored; may be empty
	// Size is the content length for TypeFile, 0 otherwise.
	Size int64
	// Linkname is the symlink target as stored, or the normalised name of
	// the regular file a hardlink points to.
	Linkname           string
	DevMajor, DevMinor int64
	ModTime            time.Time
}

// ImageDigest computes image digest v1 (docs/PROTOCOL.md) of an image tar,
// compressed (any supported compression, recognised by magic) or not, and
// returns it with the number of entries it covers. f selects the name
// prefix to strip: "./" for FormatXPAK, "image/" for FormatGPKG.
func ImageDigest(r io.Reader, f Format, lim Limits) ([32]byte, int, error) {
	return WalkImageDigest(r, f, lim, nil)
}

// WalkImage validates an image tar exactly as ImageDigest does and calls fn
// for every entry in tar order (the root entry excluded) with a reader of
// its content (empty for all but TypeFile). Content fn leaves unread is
// skipped. An error from fn stops the walk and is returned wrapped with the
// entry name, unless reading the content had failed: then the image's own
// error is returned, as a walk without fn would.
func WalkImage(r io.Reader, f Format, lim Limits, fn func(ImageEntry, io.Reader) error) error {
	_, _, err := WalkImageDigest(r, f, lim, fn)
	return err
}

// WalkImageDigest is WalkImage that also returns the image digest, so a
// re-packer can prove in the same pass that what it wrote is the image
// peers attested. fn may be nil.
func WalkImageDigest(r io.Reader, f Format, lim Limits, fn func(ImageEntry, io.Reader) error) ([32]byte, int, error) {
	lim = lim.withDefaults()
	br := bufio.NewReaderSize(r, ioBufSize)
	c, err := peekForDecoder(br)
	if err != nil {
		return [32]byte{}, 0, fmt.Errorf("image: %w", err)
	}
	res, err := digestImageStream(br, c, f, lim, fn, true)
	return res.digest, res.entries, err
}

// imageResult is what one pass over an image payload establishes.
type imageResult struct {
	digest  [32]byte
	entries int
	// tarSize is the served image tar's length (ImageTarSize), or 0 when
	// the image holds an entry the served form does not carry.
	tarSize int64
	// ordered is true when the entries came in the served order, so the
	// image can be re-packed as it is read, without a spool.
	ordered bool
}

// digestImageStream decodes an image payload whose compression c was
// already detected and walks it. async runs the decoder ahead in its own
// goroutine (worth it for large payloads).
func digestImageStream(r io.Reader, c Compression, f Format, lim Limits, fn func(ImageEntry, io.Reader) error, async bool) (imageResult, error) {
	dec, err := openPayload(r, c, "image tar", lim.MaxImageBytes, lim)
	if err != nil {
		return imageResult{}, fmt.Errorf("image: %w", err)
	}
	defer dec.Close()
	var src io.Reader = dec
	if async {
		a := newAsyncReader(src)
		defer a.Close()
		src = a
	}
	buf := getBuf()
	defer putBuf(buf)
	w := newImageWalker(f, lim, *buf)
	if err := w.walk(src, fn); err != nil {
		if cb, ok := errors.AsType[*callbackError](err); ok {
			return imageResult{}, cb.err // the caller's own error, untouched
		}
		return imageResult{}, streamError("image", err)
	}
	// Read the decoded stream to its end: the decoder verifies its
	// checksums only there, and a bomb hidden after the end-of-archive
	// marker still counts against the payload's bounds.
	if _, err := io.CopyBuffer(io.Discard, src, w.buf); err != nil {
		return imageResult{}, streamError("image", err)
	}
	// Before digest(), which rewrites hardlink groups its own way.
	tarSize := w.servedTarSize()
	sum, n := w.digest()
	return imageResult{digest: sum, entries: n, tarSize: tarSize, ordered: !w.unordered && tarSize > 0}, nil
}

// servedTarSize is the length of the served image tar of the walked
// entries (ImageTarSize), or 0 when one of them cannot be served (device
// nodes, owners the tar header cannot hold).
func (w *imageWalker) servedTarSize() int64 {
	es := make([]ImageEntry, len(w.entries))
	for i, e := range w.entries {
		es[i] = ImageEntry{
			Name: e.name, Type: e.typ, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, Uname: e.uname, Gname: e.gname,
			Size: e.size, Linkname: e.link,
		}
	}
	n, err := ImageTarSize(ServedImage(es))
	if err != nil {
		return 0
	}
	return n
}

// streamError classifies an error met while reading a decoded stream
// through archive/tar. The payload below has already classified what the
// decoder and the source said; what is left is archive/tar's own: a
// decoded stream that ends inside an entry is truncated, anything else it
// cannot parse is corrupt.
func streamError(what string, err error) error {
	if _, ok := errors.AsType[*sourceFailure](err); ok || hasSentinel(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: %w: tar ends inside an entry", what, ErrTruncated)
	}
	return fmt.Errorf("%s: %w: tar: %v", what, ErrCorrupt, err)
}

// tarStream sits under archive/tar to tell an archive that ended with
// its end-of-archive marker from one that just stopped: archive/tar
// returns io.EOF for both, and a stream cut at an entry boundary (an
// uncompressed tar, or a decoder that does not notice its own end
// missing) would otherwise pass as a smaller image. Every tar GNU tar,
// Python's tarfile (portage) and archive/tar write ends with the marker.
type tarStream struct {
	r     io.Reader
	ended bool // a read found the stream's end with nothing left
}

func (t *tarStream) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n == 0 && err == io.EOF {
		t.ended = true
	}
	return n, err
}

// end is the verdict when archive/tar reports io.EOF: archive/tar stops
// reading at the marker, so an end it had to read up to is a missing one.
func (t *tarStream) end() error {
	if t.ended {
		return fmt.Errorf("%w: tar ends without its end-of-archive marker", ErrTruncated)
	}
	return nil
}

var allSentinels = []error{
	ErrIO, ErrUnknownFormat, ErrTruncated, ErrTooLarge, ErrBadXPAK, ErrBadGPKG,
	ErrUnknownMember, ErrDuplicateMember, ErrMissingMember, ErrBadManifest,
	ErrNotInManifest, ErrManifestMismatch, ErrUnknownCompression, ErrCorrupt,
	ErrBadMetadata, ErrPathTraversal, ErrBadName, ErrThroughSymlink,
	ErrPathConflict, ErrBadHardlink, ErrDuplicatePath, ErrDeviceNode,
	ErrUnknownType,
}

// digestEntry is what the digest needs of one entry, kept until the end
// because the records are written in name order, not tar order.
type digestEntry struct {
	name, link   string
	owner, group string // uname/gname, or decimal uid/gid when empty
	uname, gname string // as stored (interned), for the served tar
	uid, gid     int
	typ          EntryType
	mode         int64
	size         int64
	devMajor     int64
	devMinor     int64
	sum          [32]byte
	target       int32 // hardlink: index of the regular entry it names; -1 otherwise
}

// pathNode is what the walker remembers of every path, stored or implied.
type pathNode struct {
	typ EntryType // implicitDir for implied directories
	idx int32     // index into entries; -1 for implied directories
}

// imageWalker validates image tar entries and collects digest records.
type imageWalker struct {
	format    Format
	lim       Limits
	entries   []digestEntry
	paths     map[string]pathNode
	heldBytes int64
	content   int64
	owners    map[string]string // interned owner names
	hasher    hash.Hash
	buf       []byte
	hasLinks  bool
	// unordered is set once an entry arrives out of the served order
	// (ServedImage): such an image must be spooled to be served.
	unordered bool
}

func newImageWalker(f Format, lim Limits, buf []byte) *imageWalker {
	return &imageWalker{
		format: f,
		lim:    lim,
		paths:  make(map[string]pathNode),
		owners: make(map[string]string),
		hasher: sha256.New(),
		buf:    buf,
	}
}

// walk reads every tar entry from r, validating and hashing it.
func (w *imageWalker) walk(r io.Reader, fn func(ImageEntry, io.Reader) error) error {
	ts := &tarStream{r: r}
	tr := tar.NewReader(ts)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return ts.end()
		}
		if err != nil {
			return err
		}
		if err := w.entry(tr, hdr, fn); err != nil {
			return err
		}
	}
}

// isSparse reports a PAX sparse entry. archive/tar expands its holes
// while reading, so its content is as large as the header says whatever
// the bytes stored: an unbounded source of zeros from a few hundred bytes.
// (GNU 'S' entries are refused by their type.)
func isSparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// tarType maps a tar type flag to the digest's letter.
func tarType(flag byte) (EntryType, bool) {
	switch flag {
	case tar.TypeReg: // tar.Reader.Next reports the legacy TypeRegA as TypeReg
		return TypeFile, true
	case tar.TypeDir:
		return TypeDir, true
	case tar.TypeSymlink:
		return TypeSymlink, true
	case tar.TypeLink:
		return TypeHardlink, true
	case tar.TypeChar:
		return TypeChar, true
	case tar.TypeBlock:
		return TypeBlock, true
	case tar.TypeFifo:
		return TypeFIFO, true
	}
	return 0, false
}

// normalizeName applies image digest v1 step 2 and the hostile-input
// rules. root reports the image root entry, which the digest drops.
func normalizeName(raw string, f Format) (name string, root bool, err error) {
	if strings.IndexByte(raw, 0) >= 0 {
		return "", false, fmt.Errorf("%w: %q contains NUL", ErrBadName, raw)
	}
	if len(raw) > maxNameLen {
		return "", false, fmt.Errorf("%w: name of %d bytes (limit %d)", ErrBadName, len(raw), maxNameLen)
	}
	name = raw
	switch f {
	case FormatGPKG:
		if name == "image" || name == "image/" {
			return "", true, nil
		}
		var ok bool
		if name, ok = strings.CutPrefix(name, "image/"); !ok {
			if strings.HasPrefix(name, "/") {
				return "", false, fmt.Errorf("%w: absolute name %q", ErrPathTraversal, raw)
			}
			return "", false, fmt.Errorf("%w: %q is outside image/", ErrBadName, raw)
		}
	default:
		name = strings.TrimPrefix(name, "./")
	}
	name = strings.TrimSuffix(name, "/")
	if name == "" || name == "." {
		return "", true, nil
	}
	if name[0] == '/' {
		return "", false, fmt.Errorf("%w: absolute name %q", ErrPathTraversal, raw)
	}
	rest := name
	for rest != "" {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		switch comp {
		case "..":
			return "", false, fmt.Errorf("%w: %q", ErrPathTraversal, raw)
		case "", ".":
			// Checked after "..": "a/./../x" is a traversal first.
			if strings.Contains("/"+rest+"/", "/../") {
				return "", false, fmt.Errorf("%w: %q", ErrPathTraversal, raw)
			}
			return "", false, fmt.Errorf("%w: %q has an empty or \".\" component", ErrBadName, raw)
		}
	}
	return name, false, nil
}

func (w *imageWalker) owner(name string, id int) string {
	if name == "" {
		return strconv.Itoa(id)
	}
	if s, ok := w.owners[name]; ok {
		return s
	}
	if len(w.owners) < 1024 {
		w.owners[name] = name
	}
	return name
}

func (w *imageWalker) entry(tr *tar.Reader, hdr *tar.Header, fn func(ImageEntry, io.Reader) error) error {
	typ, ok := tarType(hdr.Typeflag)
	if !ok {
		return fmt.Errorf("%w: %q has tar type %q", ErrUnknownType, hdr.Name, hdr.Typeflag)
	}
	if isSparse(hdr) {
		return fmt.Errorf("%w: %q is a sparse file", ErrUnknownType, hdr.Name)
	}
	name, root, err := normalizeName(hdr.Name, w.format)
	if err != nil {
		return err
	}
	if root {
		if typ != TypeDir {
			return fmt.Errorf("%w: image root %q is not a directory", ErrPathConflict, hdr.Name)
		}
		return nil
	}
	if len(w.entries) >= w.lim.MaxEntries {
		return fmt.Errorf("%w: more than %d image entries", ErrTooLarge, w.lim.MaxEntries)
	}
	if (typ == TypeChar || typ == TypeBlock) && !w.lim.AllowDevices {
		return fmt.Errorf("%w: %q", ErrDeviceNode, name)
	}
	if strings.IndexByte(hdr.Uname, 0) >= 0 || strings.IndexByte(hdr.Gname, 0) >= 0 ||
		len(hdr.Uname) > maxOwnerLen || len(hdr.Gname) > maxOwnerLen {
		return fmt.Errorf("%w: %q has a bad owner name", ErrBadName, name)
	}

	e := digestEntry{
		name:   name,
		typ:    typ,
		mode:   hdr.Mode & 0o7777,
		owner:  w.owner(hdr.Uname, hdr.Uid),
		group:  w.owner(hdr.Gname, hdr.Gid),
		uid:    hdr.Uid,
		gid:    hdr.Gid,
		target: -1,
	}
	if hdr.Uname != "" {
		e.uname = e.owner
	}
	if hdr.Gname != "" {
		e.gname = e.group
	}
	switch typ {
	case TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > maxNameLen || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return fmt.Errorf("%w: symlink %q has a bad target", ErrBadName, name)
		}
		e.link = hdr.Linkname
	case TypeHardlink:
		target, troot, err := normalizeName(hdr.Linkname, w.format)
		if err != nil {
			return fmt.Errorf("%w: %q: %w", ErrBadHardlink, name, err)
		}
		node, ok := w.paths[target]
		if troot || !ok || node.typ != TypeFile {
			return fmt.Errorf("%w: %q links to %q, which is not a regular file stored earlier", ErrBadHardlink, name, hdr.Linkname)
		}
		e.link = target
		e.target = node.idx
		w.hasLinks = true
	case TypeChar, TypeBlock:
		e.devMajor, e.devMinor = hdr.Devmajor, hdr.Devminor
	}

	w.heldBytes += int64(len(e.name)+len(e.link)) + 64
	if w.heldBytes > w.lim.MaxNameBytes {
		return fmt.Errorf("%w: image names exceed %d bytes", ErrTooLarge, w.lim.MaxNameBytes)
	}
	if err := w.place(name, typ, int32(len(w.entries))); err != nil {
		return err
	}

	var content io.Reader = eofReader{}
	if typ == TypeFile {
		if hdr.Size < 0 {
			return fmt.Errorf("%w: %q has negative size", ErrCorrupt, name)
		}
		w.content += hdr.Size
		if w.content > w.lim.MaxImageBytes {
			return fmt.Errorf("%w: image content exceeds %d bytes", ErrTooLarge, w.lim.MaxImageBytes)
		}
		e.size = hdr.Size
		w.hasher.Reset()
		content = tr
		if fn != nil {
			content = io.TeeReader(tr, w.hasher)
		}
	}
	var failed *readFailure
	if fn != nil && typ == TypeFile {
		failed = &readFailure{r: content}
		content = failed
	}
	if fn != nil {
		ie := ImageEntry{
			Name: name, Type: typ, Mode: e.mode,
			Uid: hdr.Uid, Gid: hdr.Gid, Uname: hdr.Uname, Gname: hdr.Gname,
			Size: e.size, Linkname: e.link,
			DevMajor: e.devMajor, DevMinor: e.devMinor,
			ModTime: hdr.ModTime,
		}
		if err := fn(ie, content); err != nil {
			if failed != nil && failed.err != nil {
				// fn failed because the image did: that failure,
				// classified as it is without fn, names the problem.
				return failed.err
			}
			return &callbackError{fmt.Errorf("image entry %q: %w", name, err)}
		}
	}
	if typ == TypeFile {
		if _, err := io.CopyBuffer(w.hasher, tr, w.buf); err != nil {
			return err
		}
		w.hasher.Sum(e.sum[:0])
	}
	if n := len(w.entries); n > 0 && comparePaths(w.entries[n-1].name, e.name) >= 0 {
		w.unordered = true
	}
	w.entries = append(w.entries, e)
	return nil
}

// place records name in the path table, enforcing: no duplicates, no path
// through a symlink or other non-directory, no non-directory replacing a
// directory earlier entries live in.
func (w *imageWalker) place(name string, typ EntryType, idx int32) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		parent := name[:i]
		node, ok := w.paths[parent]
		switch {
		case !ok:
			w.paths[parent] = pathNode{typ: implicitDir, idx: -1}
		case node.typ == TypeSymlink:
			return fmt.Errorf("%w: %q goes through symlink %q", ErrThroughSymlink, name, parent)
		case node.typ != TypeDir && node.typ != implicitDir:
			return fmt.Errorf("%w: %q lies under non-directory %q", ErrPathConflict, name, parent)
		}
	}
	node, ok := w.paths[name]
	switch {
	case !ok:
	case node.typ != implicitDir:
		return fmt.Errorf("%w: %q", ErrDuplicatePath, name)
	case typ == TypeSymlink:
		return fmt.Errorf("%w: symlink %q replaces a directory earlier entries live in", ErrThroughSymlink, name)
	case typ != TypeDir:
		return fmt.Errorf("%w: %q replaces a directory earlier entries live in", ErrPathConflict, name)
	}
	w.paths[name] = pathNode{typ: typ, idx: idx}
	return nil
}

// digest applies hardlink normalisation, sorts and encodes the records.
func (w *imageWalker) digest() ([32]byte, int) {
	if w.hasLinks {
		w.normalizeHardlinks()
	}
	slices.SortFunc(w.entries, func(a, b digestEntry) int { return strings.Compare(a.name, b.name) })
	h := sha256.New()
	bw := bufio.NewWriterSize(h, 64<<10)
	bw.WriteString(imageDigestPrefix)
	var num [24]byte
	var hexsum [64]byte
	for i := range w.entries {
		e := &w.entries[i]
		bw.WriteByte(byte(e.typ))
		bw.WriteByte(0)
		bw.WriteString(e.name)
		bw.WriteByte(0)
		bw.Write(strconv.AppendInt(num[:0], e.mode, 8))
		bw.WriteByte(0)
		bw.WriteString(e.owner)
		bw.WriteByte(0)
		bw.WriteString(e.group)
		bw.WriteByte(0)
		if e.typ == TypeFile {
			bw.Write(strconv.AppendInt(num[:0], e.size, 10))
			bw.WriteByte(0)
			hex.Encode(hexsum[:], e.sum[:])
			bw.Write(hexsum[:])
		} else {
			bw.WriteByte('0')
			bw.WriteByte(0)
		}
		bw.WriteByte(0)
		bw.WriteString(e.link)
		bw.WriteByte(0)
		if e.typ == TypeChar || e.typ == TypeBlock {
			bw.Write(strconv.AppendInt(num[:0], e.devMajor, 10))
			bw.WriteByte(0)
			bw.Write(strconv.AppendInt(num[:0], e.devMinor, 10))
			bw.WriteByte(0)
		} else {
			bw.WriteByte(0)
			bw.WriteByte(0)
		}
		bw.WriteByte(0) // reserved 11th field
	}
	_ = bw.Flush() // into a hash.Hash, whose Write never fails
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, len(w.entries)
}

// normalizeHardlinks rewrites each hardlink group so the bytewise-smallest
// name is the regular file and every other name links to it: which name
// tar stored as the file depends on directory order, the digest must not.
func (w *imageWalker) normalizeHardlinks() {
	smallest := make(map[int32]int32) // regular entry -> smallest member of its group
	for i := range w.entries {
		e := &w.entries[i]
		if e.typ != TypeHardlink {
			continue
		}
		cur, ok := smallest[e.target]
		if !ok {
			cur = e.target
		}
		if e.name < w.entries[cur].name {
			cur = int32(i)
		}
		smallest[e.target] = cur
	}
	for i := range w.entries {
		e := &w.entries[i]
		var file int32
		switch e.typ {
		case TypeHardlink:
			file = e.target
		case TypeFile:
			if _, ok := smallest[int32(i)]; !ok {
				continue
			}
			file = int32(i)
		default:
			continue
		}
		min := smallest[file]
		if int32(i) == min {
			e.typ, e.size, e.sum, e.link = TypeFile, w.entries[file].size, w.entries[file].sum, ""
		} else {
			e.link = w.entries[min].name
		}
	}
	// Second pass: entries that were the stored file but are not the
	// smallest become hardlinks. Done after the first pass so every member
	// still read the stored file's size and sum above.
	for i := range w.entries {
		e := &w.entries[i]
		if e.typ == TypeFile && e.link != "" {
			e.typ, e.size, e.sum = TypeHardlink, 0, [32]byte{}
		}
	}
}

// callbackError carries a WalkImage callback's error past the stream
// error classification, which must not relabel it as corruption.
type callbackError struct{ err error }

func (c *callbackError) Error() string { return c.err.Error() }
func (c *callbackError) Unwrap() error { return c.err }

// readFailure remembers the first error, other than its end, that reading
// an entry's content met.
type readFailure struct {
	r   io.Reader
	err error
}

func (f *readFailure) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF && f.err == nil {
		f.err = err
	}
	return n, err
}

// eofReader is the content of entries that have none.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
