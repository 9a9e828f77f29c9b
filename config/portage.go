package config

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// portageqTimeout bounds one portageq run: it starts python and loads the
// whole portage config, which takes ~1 s, but a broken install must not
// block the daemon's start.
const portageqTimeout = 10 * time.Second

// portageVars are the variables read from portage, in the order portageq is
// asked for them; EROOT is only used to locate the gentoo repository.
var portageVars = []string{"PKGDIR", "CHOST", "CFLAGS", "CXXFLAGS", "FFLAGS", "FCFLAGS", "LDFLAGS", "ARCH"}

// ProbeOptions says how ProbePortage reaches portage.
type ProbeOptions struct {
	// Root prefixes /etc/portage, /etc/make.conf and profile paths; ""
	// is the real root. portageq always reads the real system, so tests
	// set DisablePortageq or point Portageq at a fake.
	Root string
	// Portageq is the command to run; "" finds "portageq" in PATH.
	Portageq string
	// DisablePortageq reads make.conf and the profile only.
	DisablePortageq bool
	// Timeout bounds each portageq run; 0 means 10 s.
	Timeout time.Duration
}

// PortageSettings are portage's values for the keys of PortageConfig, as
// portage itself would use them.
type PortageSettings struct {
	// Settings holds the values, with Sources naming where each came
	// from (SourcePortageq, SourceMakeConf, SourceProfile,
	// SourceReposConf, SourceDefault). Keys nobody set are "" and absent
	// from Sources.
	Settings PortageConfig
	// Sources is Settings.Sources, repeated for convenience.
	Sources map[string]string
	// Warnings explains fallbacks (portageq failed, an unreadable profile
	// parent), for the daemon to log.
	Warnings []string
}

// ProbePortage asks portage for PKGDIR, CHOST, the *FLAGS, ARCH and the
// gentoo repository location. It runs `portageq envvar -v …` when portageq
// is available — that is exactly what portage will use — and otherwise (or
// when portageq fails, which becomes a warning) reads the profile's
// make.defaults, make.conf and repos.conf itself. Missing files are not
// errors: a machine without portage gets PKGDIR and the repository from
// portage's defaults and nothing else. A make.conf portage itself would
// reject is an error.
func ProbePortage(ctx context.Context, opts ProbeOptions) (PortageSettings, error) {
	ps := PortageSettings{Sources: map[string]string{}}
	ps.Settings.Sources = ps.Sources
	if opts.Timeout <= 0 {
		opts.Timeout = portageqTimeout
	}
	if !opts.DisablePortageq {
		cmd := opts.Portageq
		if cmd == "" {
			if p, err := exec.LookPath("portageq"); err == nil {
				cmd = p
			}
		}
		if cmd != "" {
			err := probePortageq(ctx, cmd, opts.Timeout, &ps)
			if err == nil {
				return ps, nil
			}
			if ctx.Err() != nil {
				return ps, ctx.Err()
			}
			ps.Warnings = append(ps.Warnings, fmt.Sprintf("%v; reading make.conf instead", err))
			clear(ps.Sources)
			ps.Settings = PortageConfig{Sources: ps.Sources}
		}
	}
	if err := probeFiles(opts.Root, &ps); err != nil {
		return ps, err
	}
	return ps, nil
}

func (ps *PortageSettings) set(name, value, source string) {
	f := portageFields(&ps.Settings)[name]
	*f = value
	ps.Sources[name] = source
}

// varField maps a portage variable to its PortageConfig key name.
func varField(v string) string { return strings.ToLower(v) }

func probePortageq(ctx context.Context, cmd string, timeout time.Duration, ps *PortageSettings) error {
	args := append([]string{"envvar", "-v"}, portageVars...)
	args = append(args, "EROOT")
	out, err := runPortageq(ctx, cmd, timeout, args...)
	// envvar exits 1 when some variable is unset (FCFLAGS often is) but
	// still prints every line; judge by the output.
	vars, perr := parsePortageqEnv(out)
	if perr != nil {
		if err != nil {
			return err
		}
		return perr
	}
	for _, v := range append(portageVars, "EROOT") {
		if _, ok := vars[v]; !ok {
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: `portageq envvar -v` printed no %s", ErrPortageq, v)
		}
	}
	for _, v := range portageVars {
		if vars[v] != "" {
			ps.set(varField(v), vars[v], SourcePortageq)
		}
	}
	eroot := vars["EROOT"]
	if eroot == "" {
		eroot = "/"
	}
	repo, err := runPortageq(ctx, cmd, timeout, "get_repo_path", eroot, "gentoo")
	if r := strings.TrimSpace(string(repo)); err == nil && r != "" && !strings.Contains(r, "\n") {
		ps.set("repo", r, SourcePortageq)
	}
	return nil
}

// runPortageq runs portageq with a timeout and returns its stdout; a
// non-zero exit is an error carrying the start of stderr.
func runPortageq(ctx context.Context, cmd string, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, cmd, args...)
	var stdout, stderr bytes.Buffer
	c.Stdout = &limitedBuffer{buf: &stdout, max: 1 << 20}
	c.Stderr = &limitedBuffer{buf: &stderr, max: 4 << 10}
	c.WaitDelay = time.Second
	err := c.Run()
	if ctx.Err() != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s %s: %w", ErrPortageq, cmd, strings.Join(args, " "), ctx.Err())
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return stdout.Bytes(), fmt.Errorf("%w: %s %s: %w: %s", ErrPortageq, cmd, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// limitedBuffer keeps the first max bytes written to it and drops the rest,
// so a runaway child cannot exhaust memory.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// parsePortageqEnv parses `portageq envvar -v` output: one NAME=value line
// per variable, value quoted with Python's shlex.quote (so a value may
// span lines inside single quotes).
func parsePortageqEnv(out []byte) (map[string]string, error) {
	p := newMakeConfParser("", nil)
	p.expandSingle = false
	p.allowSource = false
	// Drop anything that is not part of an assignment (warnings portage
	// may print to stdout) line by line until the first NAME= line.
	var kept bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	started := false
	for sc.Scan() {
		line := sc.Text()
		if !started {
			if i := strings.IndexByte(line, '='); i <= 0 || strings.IndexFunc(line[:i], func(r rune) bool { return r > 127 || !isNameChar(byte(r)) }) >= 0 {
				continue
			}
			started = true
		}
		kept.WriteString(line)
		kept.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading output: %w", ErrPortageq, err)
	}
	if err := p.parse("portageq output", kept.String()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPortageq, err)
	}
	return p.out, nil
}

// probeFiles reads what portage would read without running it: the
// profile's make.defaults (parents first), then /etc/make.conf and
// /etc/portage/make.conf, then repos.conf for the gentoo repository.
func probeFiles(root string, ps *PortageSettings) error {
	repo, repoSource, err := gentooRepo(root)
	if err != nil {
		return err
	}
	if repoSource != "" {
		ps.set("repo", repo, repoSource)
	}
	if repo == "" {
		repo = filepath.Join(root, DefaultRepo)
	}

	p := newMakeConfParser(root, nil)
	profile, warn := profileStack(root, repo)
	ps.Warnings = append(ps.Warnings, warn...)
	for _, dir := range profile {
		f := filepath.Join(dir, "make.defaults")
		if _, err := os.Stat(f); err != nil {
			continue
		}
		if err := p.parseFile(f); err != nil {
			// Profiles are maintained by Gentoo, not the user: a parse
			// failure there is ours to tolerate.
			ps.Warnings = append(ps.Warnings, err.Error())
		}
	}
	fromProfile := map[string]string{}
	for _, v := range portageVars {
		if val, ok := p.vars[v]; ok {
			fromProfile[v] = val
		}
	}
	p.out = map[string]string{}
	read := 0
	legacy, current := filepath.Join(root, "/etc/make.conf"), filepath.Join(root, "/etc/portage/make.conf")
	paths := []string{legacy, current}
	if a, err := os.Stat(legacy); err == nil {
		if b, err := os.Stat(current); err == nil && os.SameFile(a, b) {
			// An old symlink between the two: portage reads it once, and
			// so must we, or `X="${X} y"` would append twice.
			paths = paths[1:]
		}
	}
	for _, mc := range paths {
		err := p.parsePath(mc)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		read++
	}
	for _, v := range portageVars {
		if val, ok := p.out[v]; ok {
			if val != "" {
				ps.set(varField(v), val, SourceMakeConf)
			}
		} else if val := fromProfile[v]; val != "" {
			ps.set(varField(v), val, SourceProfile)
		}
	}
	if ps.Settings.PkgDir == "" {
		ps.set("pkgdir", filepath.Join(root, DefaultPKGDIR), SourceDefault)
	}
	if read == 0 && len(profile) == 0 {
		ps.Warnings = append(ps.Warnings, "no portage configuration found (no make.conf, no make.profile): only portage defaults apply")
	}
	return nil
}
