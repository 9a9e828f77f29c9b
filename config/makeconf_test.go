package config

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree creates files (path → content) under dir; a content starting
// with "->" makes a symlink instead.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseMakeConf(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		path  string // parsed path relative to the tree; "" = make.conf
		want  map[string]string
		err   string // substring of the error; "" = success
	}{
		{
			name:  "double and single quotes, bare words",
			files: map[string]string{"make.conf": "A=\"x y\"\nB='p q'\nC=bare\nD=\nE=\"\"\n"},
			want:  map[string]string{"A": "x y", "B": "p q", "C": "bare", "D": "", "E": ""},
		},
		{
			name:  "expansion of earlier keys, braced and bare, unset is empty",
			files: map[string]string{"make.conf": "COMMON=\"-O2 -pipe\"\nCFLAGS=\"${COMMON} -g\"\nCXX=$COMMON\nU=\"[$UNSET]\"\n"},
			want:  map[string]string{"COMMON": "-O2 -pipe", "CFLAGS": "-O2 -pipe -g", "CXX": "-O2 -pipe", "U": "[]"},
		},
		{
			name:  "portage expands inside single quotes too",
			files: map[string]string{"make.conf": "A=1\nB='$A ${A}'\n"},
			want:  map[string]string{"A": "1", "B": "1 1"},
		},
		{
			name:  "escapes: \\$ is literal, \\\\ is a backslash, \\\" a quote",
			files: map[string]string{"make.conf": `A=1` + "\n" + `B="\$A \\ \" \x"` + "\n" + `C=a\ b` + "\n"},
			want:  map[string]string{"A": "1", "B": `$A \ " \x`, "C": "a b"},
		},
		{
			name:  "line continuation and newlines inside quotes become spaces",
			files: map[string]string{"make.conf": "A=\"one \\\ntwo\"\nB=\"x\ny\"\nC=p\\\nq\nD='m\nn'\n"},
			want:  map[string]string{"A": "one two", "B": "x y", "C": "pq", "D": "m n"},
		},
		{
			name:  "comments, export, several assignments on a line, NAME = value",
			files: map[string]string{"make.conf": "# comment\n  export A=1 # trailing\nB=2 C=3\nD = \"4\"\nE=x#y\nF=#empty\n"},
			want:  map[string]string{"A": "1", "B": "2", "C": "3", "D": "4", "E": "x#y", "F": ""},
		},
		{
			name:  "later assignments win; concatenated quoting",
			files: map[string]string{"make.conf": "A=1\nA=2\nB=a'b c'\"d\"e\n"},
			want:  map[string]string{"A": "2", "B": "ab cde"},
		},
		{
			name: "source relative to the sourcing file, and absolute",
			files: map[string]string{
				"etc/make.conf":      "A=1\nsource sub/more.conf\nsource \"$DIR/abs.conf\"\nC=\"$B$D\"\n",
				"etc/sub/more.conf":  "B=\"$A+2\"\nDIR=/elsewhere\n",
				"elsewhere/abs.conf": "D=4\n",
			},
			path: "etc/make.conf",
			want: map[string]string{"A": "1", "B": "1+2", "DIR": "/elsewhere", "D": "4", "C": "1+24"},
		},
		{
			name: "make.conf directory: files in sorted order, backups and dot files skipped",
			files: map[string]string{
				"make.conf/20-b":    "A=\"$A b\"\n",
				"make.conf/10-a":    "A=a\n",
				"make.conf/30/x":    "A=\"$A x\"\n",
				"make.conf/40-c~":   "A=backup\n",
				"make.conf/.hidden": "A=hidden\n",
			},
			path: "make.conf",
			want: map[string]string{"A": "a b x"},
		},
		{name: "unterminated double quote", files: map[string]string{"make.conf": "A=1\nB=\"x\n"}, err: "make.conf:2: unterminated double quote"},
		{name: "unterminated single quote", files: map[string]string{"make.conf": "B='x\n\n"}, err: "make.conf:1: unterminated single quote"},
		{name: "command substitution", files: map[string]string{"make.conf": "A=$(uname -m)\n"}, err: "command substitution"},
		{name: "backticks", files: map[string]string{"make.conf": "A=\"`uname`\"\n"}, err: "command substitution"},
		{name: "parameter expansion operators", files: map[string]string{"make.conf": "A=${B:-x}\n"}, err: "unsupported expansion"},
		{name: "a command is not an assignment", files: map[string]string{"make.conf": "A=1\necho hi\n"}, err: `make.conf:2: want NAME=value, got "echo hi"`},
		{name: "invalid name", files: map[string]string{"make.conf": "1A=x\n"}, err: `invalid variable name "1A"`},
		{name: "missing source", files: map[string]string{"make.conf": "source nope.conf\n"}, err: "nope.conf: no such file"},
		{name: "source cycle", files: map[string]string{"make.conf": "source b\n", "b": "source make.conf\n"}, err: "source cycle"},
		{name: "pipe", files: map[string]string{"make.conf": "A=x|y\n"}, err: "unsupported shell syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			path := tt.path
			if path == "" {
				path = "make.conf"
			}
			// Absolute `source` paths are re-rooted so the test stays in dir.
			p := newMakeConfParser(dir, nil)
			err := p.parsePath(filepath.Join(dir, path))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrMakeConf) {
					t.Fatalf("err = %v, want ErrMakeConf containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(p.out, tt.want) {
				t.Errorf("got  %q\nwant %q", p.out, tt.want)
			}
		})
	}
}

func TestParseMakeConfMissing(t *testing.T) {
	_, err := ParseMakeConf(filepath.Join(t.TempDir(), "make.conf"))
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrMakeConf) {
		t.Fatalf("err = %v, want ErrNotExist and ErrMakeConf", err)
	}
}

func TestParseMakeConfFixture(t *testing.T) {
	got, err := ParseMakeConf("testdata/root/etc/portage/make.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"COMMON_FLAGS":  "-O2 -pipe \t-march=x86-64-v3",
		"CFLAGS":        "-O2 -pipe \t-march=x86-64-v3",
		"CXXFLAGS":      "-O2 -pipe \t-march=x86-64-v3",
		"FCFLAGS":       "-O2 -pipe \t-march=x86-64-v3",
		"__ARCH_SUFFIX": "-v3",
		"PKGDIR":        "/srv/binpkgs",
		"FEATURES":      "buildpkg binary_sharing",
		"BINPKG_FORMAT": "gpkg",
		"LDFLAGS":       " -Wl,-z,pack-relative-relocs", // no profile in scope here
	}
	if !maps.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestParseMakeConfLimits(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("# padding\n", maxMakeConfFile/10+1)
	writeTree(t, dir, map[string]string{"big.conf": big})
	if _, err := ParseMakeConf(filepath.Join(dir, "big.conf")); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: err = %v", err)
	}
	// A chain of sources deeper than the limit.
	files := map[string]string{}
	for i := 0; i <= maxSourceDepth+1; i++ {
		files[filepath.Join("d", strings.Repeat("n/", i), "f")] = "source n/f\n"
	}
	files[filepath.Join("d", strings.Repeat("n/", maxSourceDepth+2), "f")] = "A=1\n"
	writeTree(t, dir, files)
	if _, err := ParseMakeConf(filepath.Join(dir, "d", "f")); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("deep sources: err = %v", err)
	}
}

func TestParsePortageqEnv(t *testing.T) {
	// What `portageq envvar -v` prints: shlex.quote()d values, a value
	// with a quote, an empty (unset) value and a deprecation line before.
	out := "PKGDIR=/var/cache/binpkgs\nCFLAGS='-O2 -pipe'\nCXXFLAGS='it'\"'\"'s $HOME'\nFFLAGS=''\nLDFLAGS='a\nb'\n"
	got, err := parsePortageqEnv([]byte("WARNING: something\n" + out))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"PKGDIR": "/var/cache/binpkgs", "CFLAGS": "-O2 -pipe", "CXXFLAGS": "it's $HOME", "FFLAGS": "", "LDFLAGS": "a b"}
	if !maps.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// FuzzParseMakeConf checks that the parser never panics or escapes its
// root, and that what it returns re-encodes to the same values.
func FuzzParseMakeConf(f *testing.F) {
	for _, seed := range []string{
		"A=1\n", "A=\"x $A\"\nB='y'\n", "export A=1 B=2 # c\n", "A=\"a\\\nb\"\n",
		"source x\n", "A=${B}\n", "A=$(x)\n", "A='\n", "A = 1\n", "A=a\\ b\\\\c\\$d\n",
	} {
		f.Add([]byte(seed))
	}
	for _, p := range []string{"testdata/root/etc/portage/make.conf/00-flags", "testdata/root/etc/portage/make.conf/10-binpkg",
		"testdata/root/var/db/repos/gentoo/profiles/arch/amd64/make.defaults"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	// Parse in memory, as if the text were dir/make.conf: `source` lines
	// resolve inside dir, which holds nothing.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newMakeConfParser(dir, nil)
		if err := p.parse(filepath.Join(dir, "make.conf"), string(data)); err != nil {
			if !errors.Is(err, ErrMakeConf) {
				t.Fatalf("error does not wrap ErrMakeConf: %v", err)
			}
			return
		}
		// Re-encode every value double-quoted and parse it back.
		var b strings.Builder
		for k, v := range p.out {
			b.WriteString(k + "=\"" + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`").Replace(v) + "\"\n")
		}
		q := newMakeConfParser(dir, nil)
		if err := q.parse("re-encoded", b.String()); err != nil {
			t.Fatalf("re-encoded values do not parse: %v\n%s", err, b.String())
		}
		if !maps.Equal(p.out, q.out) {
			t.Fatalf("round trip changed values:\n got %q\nwant %q", q.out, p.out)
		}
	})
}
