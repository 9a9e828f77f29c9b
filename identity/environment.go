package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/dsnet/compress/bzip2"
)

// MaxEnvironmentSize caps the decompressed size of environment.bz2. Real
// environments are well under a few MiB even for packages inheriting dozens
// of eclasses; the cap stops a bzip2 bomb from a stranger's package.
const MaxEnvironmentSize = 64 << 20

var (
	// ErrEnvironmentSyntax means environment.bz2 is not the `declare -p` +
	// `declare -fp` output portage writes; such a package gets no metadata
	// digest and is never served.
	ErrEnvironmentSyntax = errors.New("identity: environment syntax")
	// ErrEnvironmentTooLarge means environment.bz2 expands beyond
	// MaxEnvironmentSize.
	ErrEnvironmentTooLarge = errors.New("identity: environment too large")
	// ErrEnvironmentCompression means environment.bz2 is not valid bzip2.
	ErrEnvironmentCompression = errors.New("identity: environment not bzip2")
)

// Var is one variable as bash's `declare -p` printed it. The value is kept
// as the quoted text bash wrote, not decoded, because the digest and the
// gateway's re-rendering must carry exactly what bash will source.
type Var struct {
	// Name is the variable name, a bash identifier.
	Name string
	// Attrs is the option word after "declare" ("-x", "--", "-a", "-Ax"),
	// empty for a bare "declare NAME".
	Attrs string
	// HasValue is false for a declaration without "=" (declare -- f).
	HasValue bool
	// Value is the raw text after "=", quotes and escapes included; it may
	// span lines.
	Value string
	// Text is the whole declaration without its final newline; it is what
	// the digest covers and what Render writes.
	Text string
}

// Scalar decodes a double-quoted, single-quoted, $'…' or bare scalar value
// the way bash would; ok is false for arrays, missing values or quoting it
// does not recognise. Used to read flags such as FFLAGS that portage does
// not always store as separate metadata keys.
func (v Var) Scalar() (s string, ok bool) {
	if !v.HasValue {
		return "", false
	}
	return decodeWord(v.Value)
}

// Environment is a parsed environment.bz2: the variables (declare -p) and
// the shell functions (declare -fp) portage saved after the build and will
// source, as root, at install and uninstall time.
type Environment struct {
	// Vars maps a variable name to its declaration.
	Vars map[string]Var
	// Funcs maps a function name to its complete definition text, from the
	// "name () " line through the closing "}", without a final newline.
	Funcs map[string]string
}

// VarNames returns the variable names sorted bytewise.
func (e *Environment) VarNames() []string { return slices.Sorted(maps.Keys(e.Vars)) }

// FuncNames returns the function names sorted bytewise.
func (e *Environment) FuncNames() []string { return slices.Sorted(maps.Keys(e.Funcs)) }

// WithoutHostVarying returns a copy without the variables IsHostVarying
// names: exactly the environment the metadata digest covers.
func (e *Environment) WithoutHostVarying() *Environment {
	out := &Environment{Vars: make(map[string]Var, len(e.Vars)), Funcs: make(map[string]string, len(e.Funcs))}
	for n, v := range e.Vars {
		if !IsHostVarying(n) {
			out.Vars[n] = v
		}
	}
	for n, f := range e.Funcs {
		out.Funcs[n] = f
	}
	return out
}

// Render writes the environment back in portage's layout: declarations
// sorted by name, then functions sorted by name, each followed by a newline.
// For an environment bash wrote, Render of the parse is the input itself
// (bash sorts both lists bytewise); the gateway serves Render of the covered
// environment, so everything portage sources is a function of the digest.
func (e *Environment) Render() []byte {
	var b bytes.Buffer
	for _, n := range e.VarNames() {
		b.WriteString(e.Vars[n].Text)
		b.WriteByte('\n')
	}
	for _, n := range e.FuncNames() {
		b.WriteString(e.Funcs[n])
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// envReaders recycles bzip2 decoders: compress/bzip2 allocates a 3.6 MB
// block buffer for every stream portage writes (bzip2 -9), for every
// package the daemon indexes. Only a decoder that read its stream to the
// end is recycled (Reset does not clear what an abandoned block left).
var envReaders sync.Pool

// DecompressEnvironment expands environment.bz2, refusing more than
// MaxEnvironmentSize bytes.
func DecompressEnvironment(bz2 []byte) ([]byte, error) {
	d, _ := envReaders.Get().(*bzip2.Reader)
	if d == nil {
		d, _ = bzip2.NewReader(bytes.NewReader(bz2), nil) // a nil config: cannot fail
	} else {
		_ = d.Reset(bytes.NewReader(bz2)) // cannot fail
	}
	r := io.LimitReader(d, MaxEnvironmentSize+1)
	out, err := io.ReadAll(r)
	if err == nil && len(out) <= MaxEnvironmentSize {
		_ = d.Reset(bytes.NewReader(nil)) // read to its end: ReadAll saw io.EOF
		envReaders.Put(d)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: environment.bz2: %v", ErrEnvironmentCompression, err)
	}
	if len(out) > MaxEnvironmentSize {
		return nil, fmt.Errorf("%w: environment.bz2 expands beyond %d bytes", ErrEnvironmentTooLarge, MaxEnvironmentSize)
	}
	return out, nil
}

// ParseEnvironment parses the text of environment.bz2 (already
// decompressed). It accepts only what `declare -p; declare -fp` prints:
// declarations first, then function definitions; any other top-level text
// (a bare command, a declaration after the functions, a value with an
// unescaped $ or backquote that would run code when sourced) is an error
// naming the line.
func ParseEnvironment(b []byte) (*Environment, error) {
	if len(b) > MaxEnvironmentSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrEnvironmentTooLarge, len(b), MaxEnvironmentSize)
	}
	p := &envParser{b: b, line: 1}
	env := &Environment{Vars: map[string]Var{}, Funcs: map[string]string{}}
	for !p.eof() {
		if p.skipBlankLine() {
			continue
		}
		if _, ok := p.funcStart(p.pos); ok {
			break
		}
		v, err := p.declaration()
		if err != nil {
			return nil, err
		}
		if _, dup := env.Vars[v.Name]; dup {
			return nil, p.errorf("variable %s declared twice", v.Name)
		}
		env.Vars[v.Name] = v
	}
	for !p.eof() {
		if p.skipBlankLine() {
			continue
		}
		name, text, err := p.function()
		if err != nil {
			return nil, err
		}
		if _, dup := env.Funcs[name]; dup {
			return nil, p.errorf("function %s defined twice", name)
		}
		env.Funcs[name] = text
	}
	return env, nil
}

type envParser struct {
	b    []byte
	pos  int
	line int
}

func (p *envParser) eof() bool { return p.pos >= len(p.b) }

func (p *envParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrEnvironmentSyntax, p.line, fmt.Sprintf(format, args...))
}

// lineAt returns the line starting at i (without its newline) and the index
// just past its newline.
func (p *envParser) lineAt(i int) (line []byte, next int) {
	j := bytes.IndexByte(p.b[i:], '\n')
	if j < 0 {
		return p.b[i:], len(p.b)
	}
	return p.b[i : i+j], i + j + 1
}

func (p *envParser) skipBlankLine() bool {
	line, next := p.lineAt(p.pos)
	if len(bytes.TrimRight(line, " \t")) != 0 {
		return false
	}
	p.pos = next
	p.line++
	return true
}

// funcStart recognises the two-line function header bash prints,
// "name () " (older bash: no trailing space) followed by "{ " or "{".
func (p *envParser) funcStart(i int) (name string, ok bool) {
	if i >= len(p.b) {
		return "", false
	}
	line, next := p.lineAt(i)
	line = bytes.TrimSuffix(line, []byte(" "))
	head, found := bytes.CutSuffix(line, []byte(" ()"))
	if !found || !validFuncName(head) || next >= len(p.b) {
		return "", false
	}
	brace, _ := p.lineAt(next)
	if string(brace) != "{ " && string(brace) != "{" {
		return "", false
	}
	return string(head), true
}

// validFuncName accepts the names bash allows for functions in its default
// (non-POSIX) mode, minus anything that would make the header ambiguous.
func validFuncName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()=$\"'`;&|<>\\{}[]#", c) >= 0 {
			return false
		}
	}
	return true
}

// function consumes one definition. The body ends at a line that is exactly
// "}" and is followed by the end of input, blank lines, or the next
// function's header; a "}" line inside a multi-line string or here-document
// therefore does not end it unless it is followed by something that looks
// exactly like a function header (see docs/PROTOCOL.md on this limit).
func (p *envParser) function() (name, text string, err error) {
	name, ok := p.funcStart(p.pos)
	if !ok {
		line, _ := p.lineAt(p.pos)
		return "", "", p.errorf("expected a function definition, found %q", truncate(line))
	}
	start, startLine := p.pos, p.line
	_, i := p.lineAt(p.pos) // header
	_, i = p.lineAt(i)      // "{"
	lines := 2
	for i < len(p.b) {
		line, next := p.lineAt(i)
		lines++
		if string(line) == "}" {
			// bash's declare -fp follows an exported (or otherwise
			// attributed) function with "declare -fx NAME"; it belongs to
			// the function.
			end, after, extra := i+1, next, 0
			for after < len(p.b) {
				attr, n := p.lineAt(after)
				if !isFuncAttrLine(attr, name) {
					break
				}
				end, after, extra = after+len(attr), n, extra+1
			}
			if p.endsFunction(after) {
				p.pos, p.line = after, p.line+lines+extra
				return name, string(p.b[start:end]), nil
			}
		}
		i = next
	}
	p.line = startLine
	return "", "", p.errorf("function %s has no closing brace", name)
}

// isFuncAttrLine recognises "declare -f<attrs> NAME" for function name.
func isFuncAttrLine(line []byte, name string) bool {
	rest, ok := bytes.CutPrefix(line, []byte("declare -f"))
	if !ok {
		return false
	}
	attrs, fn, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(attrs) == 0 || string(fn) != name {
		return false
	}
	for _, c := range attrs {
		if !isAlpha(c) {
			return false
		}
	}
	return true
}

func (p *envParser) endsFunction(next int) bool {
	for next < len(p.b) {
		line, after := p.lineAt(next)
		if len(bytes.TrimRight(line, " \t")) != 0 {
			_, ok := p.funcStart(next)
			return ok
		}
		next = after
	}
	return true
}

// declaration consumes "declare [OPTS] NAME[=VALUE]" up to the unquoted
// newline that ends it.
func (p *envParser) declaration() (Var, error) {
	start := p.pos
	rest := p.b[p.pos:]
	if !bytes.HasPrefix(rest, []byte("declare ")) {
		line, _ := p.lineAt(p.pos)
		return Var{}, p.errorf("expected a declaration or function, found %q", truncate(line))
	}
	i := p.pos + len("declare ")
	var v Var
	if i < len(p.b) && p.b[i] == '-' {
		j := i + 1
		for j < len(p.b) && (isAlpha(p.b[j]) || (j == i+1 && p.b[j] == '-')) {
			j++
		}
		if j == i+1 || j >= len(p.b) || p.b[j] != ' ' {
			return Var{}, p.errorf("malformed declare options")
		}
		v.Attrs = string(p.b[i:j])
		i = j + 1
	}
	j := i
	for j < len(p.b) && (isAlpha(p.b[j]) || p.b[j] == '_' || (j > i && isDigit(p.b[j]))) {
		j++
	}
	if j == i {
		return Var{}, p.errorf("declaration without a valid variable name")
	}
	v.Name = string(p.b[i:j])
	switch {
	case j == len(p.b) || p.b[j] == '\n':
		// declared without a value
	case p.b[j] == '=':
		end, err := p.value(j + 1)
		if err != nil {
			return Var{}, fmt.Errorf("variable %s: %w", v.Name, err)
		}
		v.HasValue = true
		v.Value = string(p.b[j+1 : end])
		j = end
	default:
		return Var{}, p.errorf("variable %s: unexpected %q after the name", v.Name, p.b[j])
	}
	v.Text = string(p.b[start:j])
	p.line += strings.Count(v.Text, "\n") + 1
	p.pos = j
	if p.pos < len(p.b) {
		p.pos++ // the newline
	}
	return v, nil
}

// value scans a declaration's value from i to the first unquoted newline and
// returns that newline's index (or len). It is deliberately stricter than
// bash: declare -p escapes $ and ` inside double quotes and never leaves
// shell metacharacters unquoted, so seeing one means the text was not
// written by bash and could execute code when sourced.
func (p *envParser) value(i int) (int, error) {
	line := p.line
	errf := func(format string, args ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrEnvironmentSyntax, line, fmt.Sprintf(format, args...))
	}
	depth := 0
	for i < len(p.b) {
		c := p.b[i]
		switch {
		case c == '\n':
			if depth != 0 {
				return 0, errf("unbalanced parenthesis in array value")
			}
			return i, nil
		case c == '"':
			i++
			for {
				if i >= len(p.b) {
					return 0, errf("unterminated double quote")
				}
				d := p.b[i]
				if d == '\n' {
					line++
				}
				if d == '\\' {
					if i+1 >= len(p.b) {
						return 0, errf("unterminated double quote")
					}
					if p.b[i+1] == '\n' {
						line++
					}
					i += 2
					continue
				}
				if d == '$' || d == '`' {
					return 0, errf("unescaped %q inside double quotes", d)
				}
				i++
				if d == '"' {
					break
				}
			}
		case c == '\'':
			k := bytes.IndexByte(p.b[i+1:], '\'')
			if k < 0 {
				return 0, errf("unterminated single quote")
			}
			line += bytes.Count(p.b[i+1:i+1+k], []byte("\n"))
			i += k + 2
		case c == '$' && i+1 < len(p.b) && p.b[i+1] == '\'':
			i += 2
			for {
				if i >= len(p.b) {
					return 0, errf("unterminated $'...' quote")
				}
				d := p.b[i]
				if d == '\n' {
					line++
				}
				if d == '\\' {
					i += 2
					continue
				}
				i++
				if d == '\'' {
					break
				}
			}
		case c == '(':
			depth++
			if depth > 1 {
				return 0, errf("nested parenthesis in value")
			}
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return 0, errf("unbalanced parenthesis in value")
			}
			i++
		case isAlpha(c) || isDigit(c) || strings.IndexByte("_-./:+@%,=[] ", c) >= 0:
			i++
		default:
			return 0, errf("unquoted %q in value", c)
		}
	}
	if depth != 0 {
		return 0, errf("unbalanced parenthesis in array value")
	}
	return i, nil
}

// decodeWord decodes one bash word made of quoted and bare parts.
func decodeWord(w string) (string, bool) {
	var out strings.Builder
	for i := 0; i < len(w); {
		c := w[i]
		switch {
		case c == '"':
			i++
			for i < len(w) && w[i] != '"' {
				if w[i] == '\\' && i+1 < len(w) && strings.IndexByte("$`\"\\\n", w[i+1]) >= 0 {
					if w[i+1] != '\n' {
						out.WriteByte(w[i+1])
					}
					i += 2
					continue
				}
				out.WriteByte(w[i])
				i++
			}
			if i >= len(w) {
				return "", false
			}
			i++
		case c == '\'':
			k := strings.IndexByte(w[i+1:], '\'')
			if k < 0 {
				return "", false
			}
			out.WriteString(w[i+1 : i+1+k])
			i += k + 2
		case c == '$' && i+1 < len(w) && w[i+1] == '\'':
			n, ok := decodeANSIC(w[i+2:], &out)
			if !ok {
				return "", false
			}
			i += 2 + n
		case c == '(' || c == ')' || c == ' ' || c == '\n' || c == '\\':
			return "", false
		default:
			out.WriteByte(c)
			i++
		}
	}
	return out.String(), true
}

// decodeANSIC decodes the body of $'…' up to and including the closing
// quote, returning how many bytes it consumed.
func decodeANSIC(s string, out *strings.Builder) (int, bool) {
	simple := map[byte]byte{'a': 7, 'b': 8, 'e': 27, 'E': 27, 'f': 12, 'n': '\n', 'r': '\r', 't': '\t', 'v': 11, '\\': '\\', '\'': '\'', '"': '"', '?': '?'}
	for i := 0; i < len(s); {
		c := s[i]
		if c == '\'' {
			return i + 1, true
		}
		if c != '\\' {
			out.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return 0, false
		}
		e := s[i+1]
		if r, ok := simple[e]; ok {
			out.WriteByte(r)
			i += 2
			continue
		}
		switch {
		case e >= '0' && e <= '7':
			j := i + 1
			for j < len(s) && j < i+4 && s[j] >= '0' && s[j] <= '7' {
				j++
			}
			n, _ := strconv.ParseUint(s[i+1:j], 8, 16)
			out.WriteByte(byte(n))
			i = j
		case e == 'x':
			j := i + 2
			for j < len(s) && j < i+4 && isHex(s[j]) {
				j++
			}
			if j == i+2 {
				return 0, false
			}
			n, _ := strconv.ParseUint(s[i+2:j], 16, 8)
			out.WriteByte(byte(n))
			i = j
		default:
			// bash keeps unknown escapes literally, backslash included.
			out.WriteByte('\\')
			out.WriteByte(e)
			i += 2
		}
	}
	return 0, false
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool   { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'f') }

func truncate(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "…"
	}
	return string(b)
}
