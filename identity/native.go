package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// nativeFlags are the compiler flags whose value "native" makes gcc pick
// the building CPU's instruction set or tuning: two users with the same
// text in make.conf share a descriptor but not the code.
var nativeFlags = []string{"-march=native", "-mtune=native", "-mcpu=native"}

// ErrNativeUnresolved means a -march=native (-mtune, -mcpu) flag could not
// be replaced by what it names on this CPU, so no key may be computed from
// the flags: it would claim one build for every CPU.
var ErrNativeUnresolved = errors.New("identity: cannot resolve a native compiler flag")

// NativeFlag returns the first word of flags that still says "native"
// (-march=native, -mtune=native, -mcpu=native), or "" when there is none.
func NativeFlag(flags string) string {
	for _, f := range strings.Fields(flags) {
		if slices.Contains(nativeFlags, f) {
			return f
		}
	}
	return ""
}

// NativeFlag returns the first flag variable of d that still says
// "native" ("CFLAGS") and that flag, or "", "" when every flag is
// resolved. A descriptor from the network with such a flag names a
// different build on every CPU; votes refuses it.
func (d Descriptor) NativeFlag() (key, flag string) {
	for _, f := range d.flagFields() {
		if n := NativeFlag(*f.value); n != "" {
			return f.key, n
		}
	}
	return "", ""
}

type flagField struct {
	key   string
	value *string
}

func (d *Descriptor) flagFields() []flagField {
	return []flagField{{"CFLAGS", &d.CFLAGS}, {"CXXFLAGS", &d.CXXFLAGS}, {"FFLAGS", &d.FFLAGS}, {"FCFLAGS", &d.FCFLAGS}, {"LDFLAGS", &d.LDFLAGS}}
}

// ResolveNative returns d with every native flag of CFLAGS, CXXFLAGS,
// FFLAGS, FCFLAGS and LDFLAGS replaced by what expand says it means on
// this machine (see ResolveNative). Descriptors of local builds go through
// it before their keys are computed, and so do the local platform's flags,
// so that builds for different CPUs get different keys and platforms.
func (d Descriptor) ResolveNative(expand func(flag string) (string, error)) (Descriptor, error) {
	for _, f := range d.flagFields() {
		v, err := ResolveNative(*f.value, expand)
		if err != nil {
			return Descriptor{}, fmt.Errorf("%s: %w", f.key, err)
		}
		*f.value = v
	}
	return d, nil
}

// ResolveNative replaces the native flags of flags (-march=native,
// -mtune=native, -mcpu=native) by their expansion on this machine, as
// expand returns it (GCCNative asks gcc). The expansions of all native
// flags are merged into one block without duplicates, put where the first
// native flag stood, in a fixed order: -march/-mcpu, the -m feature flags
// sorted, the --param cache sizes sorted, -mtune. Other flags keep their
// place, so a later -mno-avx512f still overrides what -march=native
// enabled. Flags without a native flag come back whitespace-normalised
// and expand is not called.
func ResolveNative(flags string, expand func(flag string) (string, error)) (string, error) {
	words := strings.Fields(flags)
	first := -1
	var block []string
	for i, w := range words {
		if !slices.Contains(nativeFlags, w) {
			continue
		}
		if first < 0 {
			first = i
		}
		if expand == nil {
			return "", fmt.Errorf("%w: %s and no compiler to ask", ErrNativeUnresolved, w)
		}
		x, err := expand(w)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrNativeUnresolved, w, err)
		}
		exp := strings.Fields(x)
		if len(exp) == 0 || NativeFlag(x) != "" {
			return "", fmt.Errorf("%w: %s expands to %q", ErrNativeUnresolved, w, x)
		}
		block = append(block, exp...)
	}
	if first < 0 {
		return strings.Join(words, " "), nil
	}
	out := slices.Clone(words[:first])
	out = append(out, orderExpansion(block)...)
	for _, w := range words[first+1:] {
		if !slices.Contains(nativeFlags, w) {
			out = append(out, w)
		}
	}
	return strings.Join(out, " "), nil
}

// orderExpansion puts an expansion into its stable order (see
// ResolveNative), dropping duplicates.
func orderExpansion(words []string) []string {
	rank := func(w string) int {
		switch {
		case strings.HasPrefix(w, "-march=") || strings.HasPrefix(w, "-mcpu="):
			return 0
		case strings.HasPrefix(w, "-mtune="):
			return 3
		case strings.HasPrefix(w, "--param"):
			return 2
		}
		return 1
	}
	words = slices.Clone(words)
	slices.SortFunc(words, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(words)
}

// GCCFor names the compiler portage uses for chost: "<chost>-gcc" when it
// is on PATH (Gentoo installs one per CHOST), else "gcc".
func GCCFor(chost string) string {
	if chost != "" {
		if _, err := exec.LookPath(chost + "-gcc"); err == nil {
			return chost + "-gcc"
		}
	}
	return "gcc"
}

// gccRunTimeout bounds one run of the compiler driver (it only
// preprocesses an empty input).
const gccRunTimeout = 30 * time.Second

// nativeCache holds each compiler's expansions: what a native flag means
// depends on the CPU and the compiler, neither of which changes while the
// daemon runs, and asking costs a process.
var nativeCache sync.Map // gcc + "\x00" + flag → string

// GCCNative returns an expander for ResolveNative that asks gcc (a name on
// PATH or a path; see GCCFor) what a native flag means on this CPU: it
// runs `gcc FLAG -E -v -` on empty input and keeps, from the cc1 command
// line gcc prints, the -march/-mcpu, -m feature, --param cache-size and
// -mtune words that a run without the flag does not have (the driver's
// defaults, such as the -march=x86-64 it adds to -mtune=native). Results
// are cached for the life of the process; failures are not. ctx bounds
// every run.
func GCCNative(ctx context.Context, gcc string) func(flag string) (string, error) {
	return func(flag string) (string, error) {
		key := gcc + "\x00" + flag
		if v, ok := nativeCache.Load(key); ok {
			return v.(string), nil
		}
		base, err := cc1Line(ctx, gcc, "")
		if err != nil {
			return "", err
		}
		line, err := cc1Line(ctx, gcc, flag)
		if err != nil {
			return "", err
		}
		exp := NativeExpansion(line, base)
		if len(exp) == 0 {
			return "", fmt.Errorf("%s %s: the cc1 line names no -m flag: %q", gcc, flag, line)
		}
		v := strings.Join(orderExpansion(exp), " ")
		nativeCache.Store(key, v)
		return v, nil
	}
}

// cc1Line runs gcc on empty input with flag (none when "") and returns the
// cc1 command line of its -v output.
func cc1Line(ctx context.Context, gcc, flag string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, gccRunTimeout)
	defer cancel()
	args := []string{"-E", "-v", "-"}
	if flag != "" {
		args = append([]string{flag}, args...)
	}
	cmd := exec.CommandContext(ctx, gcc, args...)
	cmd.Stdin = bytes.NewReader(nil)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", gcc, strings.Join(args, " "), err, lastLine(stderr.String()))
	}
	if l, ok := findCC1(stderr.String()); ok {
		return l, nil
	}
	return "", fmt.Errorf("%s %s: no cc1 line in its -v output", gcc, strings.Join(args, " "))
}

// findCC1 returns the cc1 command line of gcc's -v output.
func findCC1(out string) (string, bool) {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && filepath.Base(f[0]) == "cc1" {
			return strings.TrimSpace(l), true
		}
	}
	return "", false
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// NativeExpansion picks from a cc1 command line what a native flag
// expanded to: the -m words (-march=, -mtune=, -mcpu=, features and
// -mno- features) and the --param values naming a cache ("--param
// l1-cache-size=32", written back as "--param=l1-cache-size=32"), minus
// every word also on base, the cc1 line of a run without the flag. In the
// order of line.
func NativeExpansion(line, base string) []string {
	baseWords := cc1Words(base)
	var out []string
	for _, w := range cc1Words(line) {
		if !slices.Contains(baseWords, w) {
			out = append(out, w)
		}
	}
	return out
}

func cc1Words(line string) []string {
	f := strings.Fields(line)
	var out []string
	for i := 0; i < len(f); i++ {
		w := f[i]
		switch {
		case w == "--param" && i+1 < len(f):
			i++
			if strings.Contains(f[i], "cache") {
				out = append(out, "--param="+f[i])
			}
		case strings.HasPrefix(w, "--param="):
			if strings.Contains(w, "cache") {
				out = append(out, w)
			}
		case strings.HasPrefix(w, "-m") && len(w) > 2:
			out = append(out, w)
		}
	}
	return out
}
