package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Bounds on what a make.conf parse may read: make.conf is small, and a
// `source` loop or a symlink to a huge file must fail, not hang.
const (
	maxMakeConfFile  = 1 << 20 // bytes per file
	maxMakeConfTotal = 8 << 20 // bytes over all files of one parse
	maxMakeConfFiles = 1024    // files in a make.conf directory tree plus sourced files
	maxSourceDepth   = 16      // nested `source`
)

// ParseMakeConf reads a make.conf the way portage does and returns every
// variable it assigns, expanded. path may be a file or a directory, in
// which case all files below it are read in sorted order (names starting
// with "." or ending in "~" are skipped), as portage does for
// /etc/portage/make.conf/. A missing path is an error matching
// fs.ErrNotExist.
//
// The accepted syntax is what portage's getconfig accepts: `[export]
// NAME=value` with single quotes, double quotes, backslash escapes, line
// continuation, `#` comments, `$NAME` and `${NAME}` expansion of variables
// set earlier, and `source FILE` (relative to the sourcing file). Like
// portage, newlines inside a value become spaces and `$NAME` is expanded
// even inside single quotes. Anything else (command substitution,
// `${A:-b}`, `if`, pipes) is an error naming the file and line.
func ParseMakeConf(path string) (map[string]string, error) {
	p := newMakeConfParser("", nil)
	if err := p.parsePath(path); err != nil {
		return nil, err
	}
	return p.out, nil
}

type makeConfParser struct {
	root         string            // prefix for absolute `source` paths
	vars         map[string]string // what $NAME expands to
	out          map[string]string // what this parse assigned
	expandSingle bool              // portage quirk: expand inside '...'
	allowSource  bool
	stack        []string // files being parsed, for cycle detection
	files        int
	budget       int
}

func newMakeConfParser(root string, seed map[string]string) *makeConfParser {
	vars := make(map[string]string, len(seed))
	for k, v := range seed {
		vars[k] = v
	}
	return &makeConfParser{
		root: root, vars: vars, out: map[string]string{},
		expandSingle: true, allowSource: true, budget: maxMakeConfTotal,
	}
}

// parsePath parses a file, or every file below a directory in order.
func (p *makeConfParser) parsePath(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMakeConf, err)
	}
	if !st.IsDir() {
		return p.parseFile(path)
	}
	var files []string
	err = walkSorted(path, func(f string) error {
		if len(files) >= maxMakeConfFiles {
			return fmt.Errorf("%w: %s: more than %d files", ErrMakeConf, path, maxMakeConfFiles)
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := p.parseFile(f); err != nil {
			return err
		}
	}
	return nil
}

// walkSorted visits regular files below dir depth-first with entries sorted
// by name, skipping what portage's _recursive_file_list skips.
func walkSorted(dir string, visit func(string) error) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMakeConf, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	for _, name := range names {
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") || name == "CVS" {
			continue
		}
		full := filepath.Join(dir, name)
		st, err := os.Stat(full) // follow symlinks, as portage does
		if err != nil {
			continue // dangling symlink: portage ignores it too
		}
		switch {
		case st.IsDir():
			if err := walkSorted(full, visit); err != nil {
				return err
			}
		case st.Mode().IsRegular():
			if err := visit(full); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *makeConfParser) parseFile(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMakeConf, err)
	}
	if slices.Contains(p.stack, abs) {
		return fmt.Errorf("%w: %s: source cycle: %s", ErrMakeConf, path, strings.Join(append(p.stack, abs), " → "))
	}
	if len(p.stack) > maxSourceDepth {
		return fmt.Errorf("%w: %s: sources nested deeper than %d", ErrMakeConf, path, maxSourceDepth)
	}
	p.files++
	if p.files > maxMakeConfFiles {
		return fmt.Errorf("%w: %s: more than %d files read", ErrMakeConf, path, maxMakeConfFiles)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMakeConf, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return fmt.Errorf("%w: %s: is a directory", ErrMakeConf, path)
	}
	limit := min(maxMakeConfFile, p.budget)
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMakeConf, path, err)
	}
	if len(data) > limit {
		return fmt.Errorf("%w: %s: larger than %d bytes (or make.conf total over %d)", ErrMakeConf, path, maxMakeConfFile, maxMakeConfTotal)
	}
	p.budget -= len(data)
	p.stack = append(p.stack, abs)
	defer func() { p.stack = p.stack[:len(p.stack)-1] }()
	return p.parse(path, string(data))
}

// lexer walks one file's text.
type lexer struct {
	name string
	src  string
	pos  int
	line int
}

func (l *lexer) errf(format string, args ...any) error {
	return fmt.Errorf("%w: %s:%d: %s", ErrMakeConf, l.name, l.line, fmt.Sprintf(format, args...))
}

func (l *lexer) peek() byte {
	if l.pos < len(l.src) {
		return l.src[l.pos]
	}
	return 0
}

func (l *lexer) eof() bool { return l.pos >= len(l.src) }

func (l *lexer) next() byte {
	c := l.src[l.pos]
	l.pos++
	if c == '\n' {
		l.line++
	}
	return c
}

func isNameStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isNameChar(c byte) bool { return isNameStart(c) || c >= '0' && c <= '9' }

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' }

// parse interprets one file's text: a sequence of assignments, `export`
// assignments and `source` commands.
func (p *makeConfParser) parse(name, src string) error {
	l := &lexer{name: name, src: src, line: 1}
	for {
		// Skip blanks, newlines, line continuations and comments.
		for !l.eof() {
			c := l.peek()
			switch {
			case isBlank(c) || c == '\n':
				l.next()
				continue
			case c == '\\' && strings.HasPrefix(l.src[l.pos:], "\\\n"):
				l.next()
				l.next()
				continue
			case c == '#':
				for !l.eof() && l.peek() != '\n' {
					l.next()
				}
				continue
			}
			break
		}
		if l.eof() {
			return nil
		}
		startLine := l.line
		start := l.pos
		for !l.eof() && isNameChar(l.peek()) {
			l.next()
		}
		word := l.src[start:l.pos]
		if (word == "export" || word == "source") && !l.eof() && isBlank(l.peek()) {
			for !l.eof() && isBlank(l.peek()) {
				l.next()
			}
			if word == "source" {
				if err := p.source(l); err != nil {
					return err
				}
				continue
			}
			start = l.pos
			for !l.eof() && isNameChar(l.peek()) {
				l.next()
			}
			word = l.src[start:l.pos]
		}
		for !l.eof() && isBlank(l.peek()) { // portage accepts NAME = value
			l.next()
		}
		if l.peek() != '=' {
			rest := l.src[start:]
			if i := strings.IndexByte(rest, '\n'); i >= 0 {
				rest = rest[:i]
			}
			l.line = startLine
			return l.errf("want NAME=value, got %q (make.conf may only assign variables and source files)", rest)
		}
		if word == "" || !isNameStart(word[0]) {
			l.line = startLine
			return l.errf("invalid variable name %q", word)
		}
		l.next() // '='
		for !l.eof() && isBlank(l.peek()) {
			l.next()
		}
		val := ""
		if !l.eof() && l.peek() != '\n' && l.peek() != '#' {
			var err error
			if val, err = p.word(l); err != nil {
				return err
			}
		}
		p.vars[word] = val
		p.out[word] = val
	}
}

// source handles `source FILE` (the lexer is at FILE).
func (p *makeConfParser) source(l *lexer) error {
	if !p.allowSource {
		return l.errf("source is not allowed here")
	}
	if l.eof() || l.peek() == '\n' {
		return l.errf("source without a file name")
	}
	target, err := p.word(l)
	if err != nil {
		return err
	}
	if target == "" {
		return l.errf("source of an empty file name")
	}
	if filepath.IsAbs(target) {
		target = filepath.Join(p.root, target)
	} else {
		target = filepath.Join(filepath.Dir(l.name), target)
	}
	if err := p.parseFile(target); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return l.errf("source %s: no such file", target)
		}
		return err
	}
	return nil
}

// word reads one shell word (unquoted text, '…' and "…" segments) and
// returns its expanded value.
func (p *makeConfParser) word(l *lexer) (string, error) {
	var b strings.Builder
	for !l.eof() {
		c := l.peek()
		switch {
		case isBlank(c) || c == '\n':
			return b.String(), nil
		case c == '\'':
			startLine := l.line
			l.next()
			end := strings.IndexByte(l.src[l.pos:], '\'')
			if end < 0 {
				l.line = startLine
				return "", l.errf("unterminated single quote")
			}
			seg := l.src[l.pos : l.pos+end]
			for range end + 1 {
				l.next()
			}
			if p.expandSingle {
				s, err := p.expand(l, seg)
				if err != nil {
					return "", err
				}
				b.WriteString(s)
			} else {
				b.WriteString(strings.ReplaceAll(seg, "\n", " "))
			}
		case c == '"':
			startLine := l.line
			l.next()
			start := l.pos
			for {
				if l.eof() {
					l.line = startLine
					return "", l.errf("unterminated double quote")
				}
				d := l.next()
				if d == '\\' && !l.eof() {
					l.next()
					continue
				}
				if d == '"' {
					break
				}
			}
			s, err := p.expand(l, l.src[start:l.pos-1])
			if err != nil {
				return "", err
			}
			b.WriteString(s)
		case c == '\\':
			l.next()
			if l.eof() {
				return b.String(), nil
			}
			if d := l.next(); d != '\n' {
				b.WriteByte(d)
			}
		case c == '$':
			s, n, err := p.expandVar(l, l.src[l.pos:])
			if err != nil {
				return "", err
			}
			for range n {
				l.next()
			}
			b.WriteString(s)
		case strings.IndexByte("`();&|<>", c) >= 0:
			return "", l.errf("unsupported shell syntax %q (quote it if it is part of a value)", string(c))
		default:
			b.WriteByte(l.next())
		}
	}
	return b.String(), nil
}

// expand performs portage's varexpand on the inside of a quoted segment:
// `$NAME`/`${NAME}` expansion, `\$` `\\` `\"` unescaping, removal of
// escaped newlines, and newlines turned into spaces.
func (p *makeConfParser) expand(l *lexer, seg string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(seg); {
		c := seg[i]
		switch c {
		case '\\':
			if i+1 >= len(seg) {
				b.WriteByte(c)
				i++
				continue
			}
			d := seg[i+1]
			switch d {
			case '$', '\\', '"', '`':
				b.WriteByte(d)
			case '\n':
			default:
				b.WriteByte(c)
				b.WriteByte(d)
			}
			i += 2
		case '$':
			s, n, err := p.expandVar(l, seg[i:])
			if err != nil {
				return "", err
			}
			b.WriteString(s)
			i += n
		case '`':
			return "", l.errf("command substitution is not supported")
		case '\n':
			b.WriteByte(' ')
			i++
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

// expandVar expands the `$…` at the start of s and says how many bytes it
// used. Unset variables expand to "", like bash and portage.
func (p *makeConfParser) expandVar(l *lexer, s string) (string, int, error) {
	if len(s) < 2 {
		return "$", 1, nil
	}
	switch {
	case s[1] == '{':
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0, l.errf("unterminated ${")
		}
		name := s[2:end]
		if name == "" || !isNameStart(name[0]) || strings.IndexFunc(name, func(r rune) bool { return r > 127 || !isNameChar(byte(r)) }) >= 0 {
			return "", 0, l.errf("unsupported expansion %q (only ${NAME} is supported)", s[:end+1])
		}
		return p.vars[name], end + 1, nil
	case s[1] == '(':
		return "", 0, l.errf("command substitution is not supported")
	case isNameStart(s[1]):
		n := 1
		for n < len(s) && isNameChar(s[n]) {
			n++
		}
		return p.vars[s[1:n]], n, nil
	default:
		return "$", 1, nil
	}
}
