package fit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// x86Levels are the flags, as /proc/cpuinfo names them, each x86-64
// micro-architecture level adds (the psABI's definition; level 1, the
// baseline, is any CPU in long mode). SSE3 is "pni" and LZCNT "abm" in
// cpuinfo.
var x86Levels = [][]string{
	1: {"lm", "cmov", "cx8", "fpu", "fxsr", "mmx", "sse", "sse2"},
	2: {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"},
	3: {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
	4: {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}

// X86Level is the highest x86-64 micro-architecture level (1..4) a CPU
// with these /proc/cpuinfo flags meets, 0 for a CPU that is no x86-64 one.
func X86Level(flags []string) int {
	level := 0
	for l := 1; l < len(x86Levels); l++ {
		for _, f := range x86Levels[l] {
			if !slices.Contains(flags, f) {
				return level
			}
		}
		level = l
	}
	return level
}

// levelName is what a Gentoo user calls a level: the -march value.
func levelName(l int) string {
	switch {
	case l <= 0:
		return "no x86-64 level"
	case l == 1:
		return "x86-64"
	}
	return fmt.Sprintf("x86-64-v%d", l)
}

// levelFlags is every flag levels 1..l need.
func levelFlags(l int) []string {
	var out []string
	for i := 1; i <= l && i < len(x86Levels); i++ {
		out = append(out, x86Levels[i]...)
	}
	return out
}

// isaFlags maps gcc's -m names of x86 instruction set extensions to the
// /proc/cpuinfo flags a CPU must show to run code using them. -m options
// that are no extension (-mtune, -mfpmath, -m64, -mshstk, whose
// instructions are no-ops on older CPUs…) are absent and never required.
var isaFlags = map[string][]string{
	"mmx": {"mmx"}, "sse": {"sse"}, "sse2": {"sse2"}, "sse3": {"pni"}, "ssse3": {"ssse3"},
	"sse4.1": {"sse4_1"}, "sse4.2": {"sse4_2"}, "sse4": {"sse4_1", "sse4_2"}, "sse4a": {"sse4a"},
	"popcnt": {"popcnt"}, "cx16": {"cx16"}, "sahf": {"lahf_lm"}, "abm": {"abm"}, "lzcnt": {"abm"},
	"movbe": {"movbe"}, "fxsr": {"fxsr"}, "xsave": {"xsave"}, "xsaveopt": {"xsaveopt"}, "xsavec": {"xsavec"}, "xsaves": {"xsaves"},
	"avx": {"avx"}, "avx2": {"avx2"}, "fma": {"fma"}, "fma4": {"fma4"}, "xop": {"xop"}, "f16c": {"f16c"},
	"bmi": {"bmi1"}, "bmi2": {"bmi2"}, "tbm": {"tbm"}, "lwp": {"lwp"}, "3dnow": {"3dnow"},
	"aes": {"aes"}, "pclmul": {"pclmulqdq"}, "vaes": {"vaes"}, "vpclmulqdq": {"vpclmulqdq"}, "gfni": {"gfni"}, "sha": {"sha_ni"},
	"rdrnd": {"rdrand"}, "rdseed": {"rdseed"}, "adx": {"adx"}, "fsgsbase": {"fsgsbase"}, "prfchw": {"3dnowprefetch"},
	"clflushopt": {"clflushopt"}, "clwb": {"clwb"}, "clzero": {"clzero"}, "mwaitx": {"mwaitx"}, "pku": {"pku"},
	"rdpid": {"rdpid"}, "wbnoinvd": {"wbnoinvd"}, "movdiri": {"movdiri"}, "movdir64b": {"movdir64b"},
	"serialize": {"serialize"}, "waitpkg": {"waitpkg"}, "cldemote": {"cldemote"}, "rtm": {"rtm"}, "hle": {"hle"}, "sgx": {"sgx"},
	"avx512f": {"avx512f"}, "avx512bw": {"avx512bw"}, "avx512cd": {"avx512cd"}, "avx512dq": {"avx512dq"}, "avx512vl": {"avx512vl"},
	"avx512ifma": {"avx512ifma"}, "avx512vbmi": {"avx512vbmi"}, "avx512vbmi2": {"avx512_vbmi2"}, "avx512vnni": {"avx512_vnni"},
	"avx512bitalg": {"avx512_bitalg"}, "avx512vpopcntdq": {"avx512_vpopcntdq"}, "avx512bf16": {"avx512_bf16"},
	"avx512fp16": {"avx512_fp16"}, "avx512vp2intersect": {"avx512_vp2intersect"}, "avx512er": {"avx512er"}, "avx512pf": {"avx512pf"},
	"avx5124fmaps": {"avx512_4fmaps"}, "avx5124vnniw": {"avx512_4vnniw"}, "avxvnni": {"avx_vnni"},
	"amx-tile": {"amx_tile"}, "amx-int8": {"amx_int8"}, "amx-bf16": {"amx_bf16"},
}

// isaParent is the extension each one builds on, as gcc's -mno- sees it:
// -mno-avx also turns off AVX2, FMA, AVX-512…, so a build with
// -march=x86-64-v3 -mno-avx does not need them.
var isaParent = map[string]string{
	"sse2": "sse", "sse3": "sse2", "ssse3": "sse3", "sse4.1": "ssse3", "sse4.2": "sse4.1", "sse4a": "sse3",
	"avx": "sse4.2", "avx2": "avx", "fma": "avx", "f16c": "avx", "fma4": "sse4a", "xop": "fma4",
	"aes": "sse2", "pclmul": "sse2", "sha": "sse2", "gfni": "sse2", "vaes": "avx", "vpclmulqdq": "avx",
	"xsaveopt": "xsave", "xsavec": "xsave", "xsaves": "xsave", "avx512f": "avx2", "avxvnni": "avx2",
	"avx512bw": "avx512f", "avx512cd": "avx512f", "avx512dq": "avx512f", "avx512vl": "avx512f",
	"avx512ifma": "avx512f", "avx512vbmi": "avx512bw", "avx512vbmi2": "avx512bw", "avx512vnni": "avx512f",
	"avx512bitalg": "avx512bw", "avx512vpopcntdq": "avx512f", "avx512bf16": "avx512bw", "avx512fp16": "avx512bw",
	"avx512vp2intersect": "avx512f", "avx512er": "avx512f", "avx512pf": "avx512f",
	"avx5124fmaps": "avx512f", "avx5124vnniw": "avx512f", "amx-int8": "amx-tile", "amx-bf16": "amx-tile",
}

// builtOn reports whether extension x is off once base is: x is base or
// builds on it.
func builtOn(x, base string) bool {
	for i := 0; x != "" && i < 16; i++ {
		if x == base {
			return true
		}
		x = isaParent[x]
	}
	return false
}

// ReadCPUFlags returns the flags /proc/cpuinfo (or the file at path in its
// format) gives every processor, sorted: the intersection, since code may
// run on any of them. A missing file or one without "flags" lines (no
// x86 CPU) gives none.
func ReadCPUFlags(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var common []string
	first := true
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		flags := strings.Fields(val)
		if first {
			common, first = flags, false
			continue
		}
		common = slices.DeleteFunc(common, func(f string) bool { return !slices.Contains(flags, f) })
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	slices.Sort(common)
	return slices.Compact(common), nil
}

// gccRunTimeout bounds one run of gcc -Q --help=target.
const gccRunTimeout = 30 * time.Second

// marchCache holds each compiler's answers: what a -march value enables
// never changes while the daemon runs.
var marchCache sync.Map // gcc + "\x00" + march → []string

// GCCMarch returns a Machine.March that asks gcc (a name on PATH or a
// path) which extensions a named -march enables: `gcc -march=NAME -Q
// --help=target` lists every -m option with [enabled] or [disabled].
// Answers are cached for the life of the process; failures (a name this
// gcc does not know) are not. ctx bounds every run.
func GCCMarch(ctx context.Context, gcc string) func(march string) ([]string, error) {
	return func(march string) ([]string, error) {
		key := gcc + "\x00" + march
		if v, ok := marchCache.Load(key); ok {
			return slices.Clone(v.([]string)), nil
		}
		ctx, cancel := context.WithTimeout(ctx, gccRunTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, gcc, "-march="+march, "-Q", "--help=target")
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s -march=%s: %w: %s", gcc, march, err, strings.TrimSpace(stderr.String()))
		}
		enabled := EnabledTargetOptions(stdout.String())
		marchCache.Store(key, enabled)
		return slices.Clone(enabled), nil
	}
}

// EnabledTargetOptions returns the -m options (without "-m") that gcc's
// -Q --help=target output marks [enabled], in its order.
func EnabledTargetOptions(out string) []string {
	var enabled []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[1] == "[enabled]" && strings.HasPrefix(f[0], "-m") && !strings.Contains(f[0], "=") {
			enabled = append(enabled, strings.TrimPrefix(f[0], "-m"))
		}
	}
	return enabled
}
