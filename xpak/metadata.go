package xpak

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Metadata is the key/value store portage writes beside the image: the XPAK
// index and data segments, or the files of a GPKG's metadata.tar. Values are
// kept as raw bytes (portage writes them with a trailing newline for most
// keys) because digests are computed over what portage wrote, not over a
// re-rendering of it.
type Metadata struct {
	values map[string][]byte
}

// NewMetadata builds a Metadata from raw values; the map is copied so the
// caller can reuse it.
func NewMetadata(raw map[string][]byte) *Metadata {
	m := &Metadata{values: make(map[string][]byte, len(raw))}
	for k, v := range raw {
		m.values[k] = append([]byte(nil), v...)
	}
	return m
}

// Set stores a raw value (used by readers and by the GPKG re-packer).
func (m *Metadata) Set(key string, value []byte) {
	if m.values == nil {
		m.values = make(map[string][]byte)
	}
	m.values[key] = append([]byte(nil), value...)
}

// Delete removes a key.
func (m *Metadata) Delete(key string) { delete(m.values, key) }

// Raw returns the bytes stored for key exactly as portage wrote them.
func (m *Metadata) Raw(key string) ([]byte, bool) {
	v, ok := m.values[key]
	return v, ok
}

// Has reports whether key is present.
func (m *Metadata) Has(key string) bool {
	_, ok := m.values[key]
	return ok
}

// Get returns the value of key as text with surrounding whitespace removed,
// the way portage's own readers treat single-line keys.
func (m *Metadata) Get(key string) string {
	return strings.TrimSpace(string(m.values[key]))
}

// Keys returns every key name, sorted bytewise.
func (m *Metadata) Keys() []string {
	keys := make([]string, 0, len(m.values))
	for k := range m.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Len is the number of keys.
func (m *Metadata) Len() int { return len(m.values) }

// Category is CATEGORY, e.g. "app-misc".
func (m *Metadata) Category() string { return m.Get("CATEGORY") }

// PF is the package name with version and revision, e.g. "layout-1.0-r1".
func (m *Metadata) PF() string { return m.Get("PF") }

// CPV is CATEGORY/PF, e.g. "app-misc/hello-1.0"; empty when either is missing.
func (m *Metadata) CPV() string {
	c, pf := m.Category(), m.PF()
	if c == "" || pf == "" {
		return ""
	}
	return c + "/" + pf
}

// Slot returns SLOT split into slot and subslot; the subslot defaults to the
// slot, as PMS says.
func (m *Metadata) Slot() (slot, subslot string) {
	s := m.Get("SLOT")
	slot, subslot, ok := strings.Cut(s, "/")
	if !ok {
		subslot = slot
	}
	return slot, subslot
}

// Words splits a whitespace-separated key (USE, IUSE, KEYWORDS…) into words.
func (m *Metadata) Words(key string) []string { return strings.Fields(m.Get(key)) }

// USE is the enabled USE flags as recorded (USE_EXPAND values included).
func (m *Metadata) USE() []string { return m.Words("USE") }

// IUSE is the ebuild's IUSE, defaults (+/-) kept.
func (m *Metadata) IUSE() []string { return m.Words("IUSE") }

// IUSEEffective is IUSE_EFFECTIVE: every flag the profile lets USE contain.
func (m *Metadata) IUSEEffective() []string { return m.Words("IUSE_EFFECTIVE") }

// BuildID returns BUILD_ID; ok is false when the key is absent (classic,
// non multi-instance packages) or not a number.
func (m *Metadata) BuildID() (id int64, ok bool) {
	s := m.Get("BUILD_ID")
	if s == "" {
		return 0, false
	}
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil
}

// BuildTime returns BUILD_TIME in Unix seconds (0 when absent).
func (m *Metadata) BuildTime() int64 {
	t, _ := strconv.ParseInt(m.Get("BUILD_TIME"), 10, 64)
	return t
}

// Environment returns environment.bz2 decompressed, bounded by
// lim.MaxMetadataValue: it is the one metadata value that expands, and the
// metadata digest needs its text.
func (m *Metadata) Environment(lim Limits) ([]byte, error) {
	lim = lim.withDefaults()
	raw, ok := m.values["environment.bz2"]
	if !ok {
		return nil, fmt.Errorf("%w: no environment.bz2", ErrBadMetadata)
	}
	var buf bytes.Buffer
	if err := decodeEnvironment(raw, &buf, lim); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeEnvironment decodes environment.bz2 into w through the same
// bounds as every other payload. Portage always writes it with bzip2, so
// the name decides here, not the magic: anything else is corrupt.
func decodeEnvironment(raw []byte, w io.Writer, lim Limits) error {
	d, err := openPayload(bytes.NewReader(raw), CompressionBzip2, "environment.bz2", lim.MaxMetadataValue, lim)
	if err != nil {
		return fmt.Errorf("environment.bz2: %w", err)
	}
	defer d.Close()
	if _, err := io.Copy(w, d); err != nil {
		return fmt.Errorf("environment.bz2: %w", err)
	}
	return nil
}

// checkMetadata applies the checks every reader shares: the keys a binpkg
// cannot lack, and environment.bz2 within its decompressed bound (decoded
// into env, io.Discard when nil).
func checkMetadata(m *Metadata, lim Limits, env io.Writer) error {
	for _, k := range []string{"CATEGORY", "PF"} {
		if m.Get(k) == "" {
			return fmt.Errorf("%w: missing %s", ErrBadMetadata, k)
		}
	}
	if raw, ok := m.values["environment.bz2"]; ok {
		if env == nil {
			env = io.Discard
		}
		return decodeEnvironment(raw, env, lim)
	}
	return nil
}
