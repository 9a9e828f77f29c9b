package xpak

// Format names the container portage wrote.
type Format string

const (
	FormatXPAK Format = "xpak" // .tbz2 / multi-instance .xpak: compressed image tar + XPAK trailer
	FormatGPKG Format = "gpkg" // .gpkg.tar, GLEP 78
)

// Compression names a payload compression, recognised by magic bytes.
type Compression string

const (
	CompressionNone  Compression = "none"
	CompressionBzip2 Compression = "bzip2"
	CompressionGzip  Compression = "gzip"
	CompressionXZ    Compression = "xz"
	CompressionZstd  Compression = "zstd"
	CompressionLZ4   Compression = "lz4"
)

// Limits bound what a hostile package can make a reader spend. Every limit
// is checked before the memory or disk is used, never after. A zero (or
// negative) bound means its DefaultLimits value, so a literal naming only
// the bounds a caller cares about never means "nothing allowed".
type Limits struct {
	// MaxImageBytes caps the decompressed size of the image tar (the
	// decompression-bomb guard).
	MaxImageBytes int64
	// MaxMetadataValue caps one metadata value (decompressed for
	// environment.bz2).
	MaxMetadataValue int64
	// MaxMetadataBytes caps the sum of all metadata values.
	MaxMetadataBytes int64
	// MaxEntries caps the number of image entries (each costs memory until
	// the digest is computed).
	MaxEntries int
	// MaxNameBytes caps the bytes of image entry names and link targets
	// held in memory until the digest is computed (MaxEntries alone would
	// still allow a million 4 KiB names).
	MaxNameBytes int64
	// MaxDecoderWindow caps the history a zstd frame or an xz block may
	// ask the decoder to allocate (zstd --long=31 asks for 2 GiB).
	MaxDecoderWindow int64
	// MaxCompressionRatio caps how many decompressed bytes a payload
	// (image, metadata.tar, environment.bz2) may yield per compressed
	// byte its decoder has consumed so far, once past
	// CompressionRatioGrace. MaxImageBytes stops a bomb only after that
	// much work, tens of seconds at 16 GiB; the ratio refuses it after a
	// small prefix, and bounds any payload's work by what its sender had
	// to send. Zeros compress 229:1 (gzip -1) to 1030:1 (gzip -9), 6800:1
	// (xz), 32000:1 (zstd) and 900000:1 (bzip2); real image tars 3–60:1.
	// lz4 cannot exceed 255:1, so an lz4 bomb is left to MaxImageBytes.
	MaxCompressionRatio int64
	// CompressionRatioGrace is how many decompressed bytes a payload may
	// yield before MaxCompressionRatio applies, so that an honest image
	// may start with large runs of zeros (QEMU installs 64 MiB edk2
	// firmware images that are all or mostly zeros) without being taken
	// for a bomb. It is also what a refused bomb costs to decode.
	CompressionRatioGrace int64
	// AllowDevices lets images carry character and block devices. Off by
	// default: no ebuild installs device nodes, so one in a stranger's
	// package is an attack on the machine installing it.
	AllowDevices bool
}

// DefaultLimits suit real packages: the largest binpkgs in ::gentoo expand to
// a few GiB, and the largest metadata value (environment.bz2) to a few MiB.
func DefaultLimits() Limits {
	return Limits{
		MaxImageBytes:    16 << 30,
		MaxMetadataValue: 8 << 20,
		MaxMetadataBytes: 32 << 20,
		MaxEntries:       1 << 20,
		MaxNameBytes:     256 << 20,
		MaxDecoderWindow: 128 << 20,
		// 500:1 is 8 times the most compressible real image tar
		// measured (the fixtures: at most 59:1, a near-empty image that
		// is mostly tar padding) and below what gzip -6/-9 and the Go
		// encoders reach on zeros (947–1030:1), so gzip bombs are caught
		// too, not only zstd, xz and bzip2 ones. The grace holds two of
		// QEMU's 64 MiB firmware images at an image's very start.
		MaxCompressionRatio:   500,
		CompressionRatioGrace: 128 << 20,
	}
}

// withDefaults replaces zero (unset) bounds by DefaultLimits, so a Limits
// literal that names only the bounds it cares about never means "nothing
// allowed" for the others.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxImageBytes <= 0 {
		l.MaxImageBytes = d.MaxImageBytes
	}
	if l.MaxMetadataValue <= 0 {
		l.MaxMetadataValue = d.MaxMetadataValue
	}
	if l.MaxMetadataBytes <= 0 {
		l.MaxMetadataBytes = d.MaxMetadataBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxNameBytes <= 0 {
		l.MaxNameBytes = d.MaxNameBytes
	}
	if l.MaxDecoderWindow <= 0 {
		l.MaxDecoderWindow = d.MaxDecoderWindow
	}
	if l.MaxCompressionRatio <= 0 {
		l.MaxCompressionRatio = d.MaxCompressionRatio
	}
	if l.CompressionRatioGrace <= 0 {
		l.CompressionRatioGrace = d.CompressionRatioGrace
	}
	return l
}

// Package is what reading one binpkg file yields: everything peers need to
// identify it, without its content.
type Package struct {
	Path        string // as given to ReadFile
	Format      Format
	Compression Compression // of the image payload
	Size        int64       // of the container file
	FileSHA256  [32]byte    // of the container file
	Metadata    *Metadata
	ImageDigest [32]byte // image digest v1, docs/PROTOCOL.md
	// ImageEntries is the number of image entries the digest covers.
	ImageEntries int
	// ImageTarSize is the length of the served form's image tar
	// (ImageTarSize), a function of the image alone; 0 when the image
	// holds an entry the served form does not carry.
	ImageTarSize int64
	// ServedOrder is true when the image's entries are stored in the
	// served order (as portage's GPKG writer stores them), so the served
	// form can be written while the image is read, without a spool.
	ServedOrder bool
	// Signed is true for a GPKG that carries .sig members and a signed
	// Manifest; the signatures are checked by package trust, not here.
	Signed bool
	// Manifest is a GPKG's Manifest member exactly as stored (clearsigned
	// when Signed), kept so package trust can check the signature without
	// reading the file again. Its DATA lines have been verified against
	// every member. Nil for XPAK.
	Manifest []byte
	// Signatures holds a GPKG's detached .sig members by member base name
	// ("image.tar.zst.sig"), for the same reason. Nil when unsigned.
	Signatures map[string][]byte
}
