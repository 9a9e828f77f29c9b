package xpak

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// xpakHeaderLen is "XPAKPACK" + index length + data length.
const xpakHeaderLen = 16

// maxXPAKIndex bounds the XPAK index: portage writes ~30 keys, a few
// hundred bytes.
const maxXPAKIndex = 1 << 20

// readXPAK reads an XPAK package (.tbz2, multi-instance .xpak):
//
//	compressed image tar | "XPAKPACK" idxlen datalen index data "XPAKSTOP" | xpaklen "STOP"
//
// All lengths are big-endian uint32 and are checked in int64/uint64 against
// each other and the file size before anything is read through them.
func readXPAK(r io.ReaderAt, size int64, trailer [xpakTrailerLen]byte, lim Limits, t Taps) (*Package, error) {
	xpakLen := int64(binary.BigEndian.Uint32(trailer[8:12]))
	if xpakLen < xpakHeaderLen+8 {
		return nil, fmt.Errorf("%w: trailer length %d is shorter than an empty xpak segment", ErrBadXPAK, xpakLen)
	}
	xpakStart := size - 8 - xpakLen
	if xpakStart < 0 {
		return nil, fmt.Errorf("%w: trailer length %d reaches before the file start (file is %d bytes)", ErrBadXPAK, xpakLen, size)
	}
	if xpakStart == 0 {
		return nil, fmt.Errorf("%w: no image payload before XPAKPACK", ErrBadXPAK)
	}
	var hdr [xpakHeaderLen]byte
	if _, err := r.ReadAt(hdr[:], xpakStart); err != nil {
		return nil, readError("xpak header", err)
	}
	indexLen, dataLen, err := parseXPAKHeader(hdr, xpakLen)
	if err != nil {
		return nil, err
	}
	// The lengths are bounded before anything is read through them:
	// readExactly grows its buffer as bytes arrive, and a hostile file
	// does deliver them (a 512 MiB sparse hole is cheap to serve).
	if err := checkXPAKLengths(indexLen, dataLen, lim); err != nil {
		return nil, err
	}

	// The metadata follows the image; a Taps.Image that needs it first
	// gets it from an early read of the XPAK segment (bounded above), and
	// the stream below must then bring the same bytes.
	var early *xpakSegment
	if t.Image != nil {
		early = readXPAKSegment(r, xpakStart+xpakHeaderLen, indexLen, dataLen)
	}
	var earlyMeta *Metadata
	if early != nil {
		// A bad segment is reported below, in the order a read without
		// taps reports it; the tap just gets no metadata.
		if m, err := parseXPAKIndex(early.index, early.data, lim); err == nil {
			earlyMeta = m
		}
	}

	fs := newFileStream(r, size, t.File)
	defer fs.release()
	p := &Package{Format: FormatXPAK, Size: size}

	// Image payload: everything before XPAKPACK.
	payload := io.LimitReader(fs.br, xpakStart)
	pbr := bufio.NewReaderSize(payload, 64<<10)
	c, err := peekForDecoder(pbr)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	p.Compression = c
	res, err := digestImageStream(pbr, c, FormatXPAK, lim, t.imageFunc(earlyMeta), xpakStart >= asyncThreshold)
	if err != nil {
		return nil, err
	}
	p.ImageDigest, p.ImageEntries, p.ImageTarSize, p.ServedOrder = res.digest, res.entries, res.tarSize, res.ordered
	// Bytes after the compressed stream's end (padding) belong to the
	// file hash but not to the image.
	if _, err := io.Copy(io.Discard, pbr); err != nil {
		return nil, readError("image payload", err)
	}

	// XPAK segment, read from the same stream.
	var hdr2 [xpakHeaderLen]byte
	if _, err := io.ReadFull(fs.br, hdr2[:]); err != nil {
		return nil, readError("xpak header", err)
	}
	if hdr2 != hdr {
		return nil, fmt.Errorf("%w: xpak header changed while reading", ErrBadXPAK)
	}
	index, err := readExactly(fs.br, indexLen, "xpak index")
	if err != nil {
		return nil, err
	}
	data, err := readExactly(fs.br, dataLen, "xpak data")
	if err != nil {
		return nil, err
	}
	var tail [xpakTrailerLen]byte
	if _, err := io.ReadFull(fs.br, tail[:]); err != nil {
		return nil, readError("xpak trailer", err)
	}
	if tail != trailer {
		return nil, fmt.Errorf("%w: trailer does not follow the xpak data (index %d + data %d bytes)", ErrBadXPAK, indexLen, dataLen)
	}
	if early != nil && (!bytes.Equal(early.index, index) || !bytes.Equal(early.data, data)) {
		return nil, fmt.Errorf("%w: xpak segment changed while reading", ErrBadXPAK)
	}
	if p.FileSHA256, err = fs.finish(size); err != nil {
		return nil, err
	}
	if p.Metadata, err = parseXPAKIndex(index, data, lim); err != nil {
		return nil, err
	}
	if err := checkMetadata(p.Metadata, lim, t.Environment); err != nil {
		return nil, err
	}
	return p, nil
}

// xpakSegment is the index and data of an XPAK segment.
type xpakSegment struct{ index, data []byte }

// readXPAKSegment reads the index and data that start at off; nil when
// they cannot be read whole (the stream then says why).
func readXPAKSegment(r io.ReaderAt, off, indexLen, dataLen int64) *xpakSegment {
	sr := io.NewSectionReader(r, off, indexLen+dataLen)
	index, err := readExactly(sr, indexLen, "xpak index")
	if err != nil {
		return nil
	}
	data, err := readExactly(sr, dataLen, "xpak data")
	if err != nil {
		return nil
	}
	return &xpakSegment{index: index, data: data}
}

// parseXPAKHeader checks "XPAKPACK" and that index and data lengths add up
// to the trailer's length (computed in int64: 32-bit sums wrap).
func parseXPAKHeader(hdr [xpakHeaderLen]byte, xpakLen int64) (indexLen, dataLen int64, err error) {
	if !bytes.Equal(hdr[:8], []byte("XPAKPACK")) {
		return 0, 0, fmt.Errorf("%w: no XPAKPACK where the trailer says the segment starts (found %q)", ErrBadXPAK, hdr[:8])
	}
	indexLen = int64(binary.BigEndian.Uint32(hdr[8:12]))
	dataLen = int64(binary.BigEndian.Uint32(hdr[12:16]))
	if want := xpakHeaderLen + indexLen + dataLen + 8; want != xpakLen {
		return 0, 0, fmt.Errorf("%w: index %d + data %d bytes disagree with trailer length %d", ErrBadXPAK, indexLen, dataLen, xpakLen)
	}
	return indexLen, dataLen, nil
}

// checkXPAKLengths bounds the index by maxXPAKIndex and the data by
// lim.MaxMetadataBytes; parseXPAKHeader has already checked both against
// the file size.
func checkXPAKLengths(indexLen, dataLen int64, lim Limits) error {
	if indexLen > maxXPAKIndex {
		return fmt.Errorf("%w: xpak index of %d bytes (limit %d)", ErrTooLarge, indexLen, maxXPAKIndex)
	}
	if dataLen > lim.MaxMetadataBytes {
		return fmt.Errorf("%w: xpak data of %d bytes (limit %d)", ErrTooLarge, dataLen, lim.MaxMetadataBytes)
	}
	return nil
}

// readExactly reads n bytes, growing the buffer only as bytes arrive, so a
// lying length costs nothing until the data is really there.
func readExactly(r io.Reader, n int64, what string) ([]byte, error) {
	var buf bytes.Buffer
	got, err := buf.ReadFrom(io.LimitReader(r, n))
	if err != nil {
		return nil, readError(what, err)
	}
	if got != n {
		return nil, fmt.Errorf("%w: %s: %d of %d bytes", ErrTruncated, what, got, n)
	}
	return buf.Bytes(), nil
}

// parseXPAKIndex decodes index entries (name length, name, data offset,
// data length) and slices their values out of data.
func parseXPAKIndex(index, data []byte, lim Limits) (*Metadata, error) {
	if err := checkXPAKLengths(int64(len(index)), int64(len(data)), lim); err != nil {
		return nil, err
	}
	m := &Metadata{values: make(map[string][]byte)}
	var total int64
	for pos := 0; pos < len(index); {
		if len(index)-pos < 4 {
			return nil, fmt.Errorf("%w: index entry at %d truncated", ErrBadXPAK, pos)
		}
		nameLen := int64(binary.BigEndian.Uint32(index[pos:]))
		pos += 4
		if nameLen == 0 || nameLen+8 > int64(len(index)-pos) {
			return nil, fmt.Errorf("%w: index entry at %d: name length %d does not fit the index", ErrBadXPAK, pos-4, nameLen)
		}
		name := string(index[pos : pos+int(nameLen)])
		pos += int(nameLen)
		off := int64(binary.BigEndian.Uint32(index[pos:]))
		n := int64(binary.BigEndian.Uint32(index[pos+4:]))
		pos += 8
		if err := checkKey(name); err != nil {
			return nil, err
		}
		if off+n > int64(len(data)) {
			return nil, fmt.Errorf("%w: key %q: offset %d + length %d past the %d-byte data segment", ErrBadXPAK, name, off, n, len(data))
		}
		if n > lim.MaxMetadataValue {
			return nil, fmt.Errorf("%w: key %q is %d bytes (limit %d)", ErrTooLarge, name, n, lim.MaxMetadataValue)
		}
		total += n
		if total > lim.MaxMetadataBytes {
			return nil, fmt.Errorf("%w: metadata exceeds %d bytes", ErrTooLarge, lim.MaxMetadataBytes)
		}
		if _, dup := m.values[name]; dup {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrBadMetadata, name)
		}
		m.values[name] = data[off : off+n : off+n]
	}
	return m, nil
}

// checkKey rejects metadata keys portage could not have written and that
// would be dangerous as file names (portage unpacks keys into a directory).
func checkKey(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("%w: bad key name %q", ErrBadMetadata, name)
	}
	return nil
}
