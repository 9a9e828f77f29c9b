package config

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// sizeUnits maps a lower-cased unit suffix to its multiplier. Single letters
// are binary (as systemd and most Gentoo tooling read "10G"); "KB", "MB", …
// are decimal SI units; "KiB", "MiB", … are binary IEC units.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"k":   1 << 10,
	"kib": 1 << 10,
	"kb":  1000,
	"m":   1 << 20,
	"mib": 1 << 20,
	"mb":  1000 * 1000,
	"g":   1 << 30,
	"gib": 1 << 30,
	"gb":  1000 * 1000 * 1000,
	"t":   1 << 40,
	"tib": 1 << 40,
	"tb":  1000 * 1000 * 1000 * 1000,
}

// ParseSize parses a byte count such as "10GiB", "20MB", "1.5 KiB", "512" or
// "0". Sizes in the config file are human strings so that a disk budget can
// be read at a glance; the result is exact (a fraction that does not land on
// a whole byte is an error, never silently rounded).
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, invalid("empty size")
	}
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	if num == "" || num == "." || strings.Count(num, ".") > 1 {
		return 0, invalid("size %q: want a number followed by an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, invalid("size %q: unknown unit %q (want B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s, in[i:])
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, invalid("size %q: bad number %q", s, num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, invalid("size %q is not a whole number of bytes", s)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, invalid("size %q exceeds %d bytes", s, int64(math.MaxInt64))
	}
	return n.Int64(), nil
}

// ParseRate parses a transfer rate in bytes per second: a size with an
// optional "/s" suffix ("20MB/s", "1MiB", "0"). Zero means unlimited.
func ParseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(t, "/s")
	return ParseSize(t)
}

// FormatSize renders n bytes in the largest binary unit that divides it
// exactly, so that FormatSize and ParseSize round-trip ("10GiB", "1536B").
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}
