package config

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Bounds on the profile tree walk.
const (
	maxProfileDepth = 32
	maxProfileNodes = 256
)

// profileStack returns the profile directories in the order portage stacks
// their make.defaults: every parent before its child, the selected profile
// (/etc/portage/make.profile), then the user's /etc/portage/profile. Parent
// entries may be relative paths, "gentoo:path" (the gentoo repository's
// profiles/) or ":path" (the same repository); parents in other
// repositories are skipped with a warning.
func profileStack(root, gentooRepo string) (stack, warnings []string) {
	etc := filepath.Join(root, "/etc/portage")
	selected := filepath.Join(etc, "make.profile")
	if target, err := os.Readlink(selected); err == nil {
		if filepath.IsAbs(target) {
			selected = filepath.Join(root, target)
		} else {
			selected = filepath.Join(etc, target)
		}
	}
	seen := map[string]bool{}
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		dir = filepath.Clean(dir)
		if depth > maxProfileDepth {
			return fmt.Errorf("profile %s: parents nested deeper than %d", dir, maxProfileDepth)
		}
		if len(seen) >= maxProfileNodes {
			return fmt.Errorf("profile %s: more than %d profile directories", dir, maxProfileNodes)
		}
		if seen[dir] {
			// portage reads a profile reached twice (diamond) twice; the
			// values are the same, so once is enough.
			return nil
		}
		seen[dir] = true
		parents, err := readLines(filepath.Join(dir, "parent"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("profile %s: %w", dir, err)
		}
		for _, p := range parents {
			var pd string
			switch repo, rel, hasRepo := strings.Cut(p, ":"); {
			case !hasRepo:
				pd = filepath.Join(dir, p)
				if filepath.IsAbs(p) {
					pd = filepath.Join(root, p)
				}
			case repo == "":
				base := profilesBase(dir)
				if base == "" {
					warnings = append(warnings, fmt.Sprintf("profile %s: parent %q: not inside a repository's profiles/ directory; skipped", dir, p))
					continue
				}
				pd = filepath.Join(base, rel)
			case repo == "gentoo":
				pd = filepath.Join(gentooRepo, "profiles", rel)
			default:
				warnings = append(warnings, fmt.Sprintf("profile %s: parent %q is in repository %q, which is not read without portageq; skipped", dir, p, repo))
				continue
			}
			if err := walk(pd, depth+1); err != nil {
				return err
			}
		}
		stack = append(stack, dir)
		return nil
	}
	if st, err := os.Stat(selected); err == nil && st.IsDir() {
		if err := walk(selected, 0); err != nil {
			warnings = append(warnings, err.Error())
			stack = nil
		}
	}
	if st, err := os.Stat(filepath.Join(etc, "profile")); err == nil && st.IsDir() {
		stack = append(stack, filepath.Join(etc, "profile"))
	}
	return stack, warnings
}

// profilesBase returns the ".../profiles" directory dir is inside, or "".
func profilesBase(dir string) string {
	for d := dir; ; {
		if filepath.Base(d) == "profiles" {
			return d
		}
		up := filepath.Dir(d)
		if up == d {
			return ""
		}
		d = up
	}
}

// readLines returns the non-empty, non-comment lines of a small file.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line != "" {
			out = append(out, line)
		}
		if len(out) > maxProfileNodes {
			return nil, fmt.Errorf("%s: too many lines", path)
		}
	}
	return out, sc.Err()
}

// gentooRepo finds the gentoo repository's location in repos.conf (a file,
// or a directory of files read in sorted order, later files overriding
// earlier ones) under root. It returns "" and no source when repos.conf
// does not mention it.
func gentooRepo(root string) (location, source string, err error) {
	path := filepath.Join(root, "/etc/portage/repos.conf")
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrMakeConf, err)
	}
	files := []string{path}
	if st.IsDir() {
		files = nil
		if err := walkSorted(path, func(f string) error {
			if len(files) >= maxMakeConfFiles {
				return fmt.Errorf("%w: %s: more than %d files", ErrMakeConf, path, maxMakeConfFiles)
			}
			files = append(files, f)
			return nil
		}); err != nil {
			return "", "", err
		}
	}
	for _, f := range files {
		loc, err := iniValue(f, "gentoo", "location")
		if err != nil {
			return "", "", err
		}
		if loc != "" {
			location = loc
		}
	}
	if location == "" {
		return "", "", nil
	}
	if !filepath.IsAbs(location) {
		return "", "", fmt.Errorf("%w: repos.conf: [gentoo] location %q is not absolute", ErrMakeConf, location)
	}
	return filepath.Join(root, location), SourceReposConf, nil
}

// iniValue returns key's value in [section] of a Python-configparser style
// file (the format of repos.conf), or "".
func iniValue(path, section, key string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMakeConf, err)
	}
	if len(data) > maxMakeConfFile {
		return "", fmt.Errorf("%w: %s: larger than %d bytes", ErrMakeConf, path, maxMakeConfFile)
	}
	cur, val := "", ""
	for n, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == "" || t[0] == '#' || t[0] == ';':
		case t[0] == '[':
			end := strings.IndexByte(t, ']')
			if end < 0 {
				return "", fmt.Errorf("%w: %s:%d: unterminated section header", ErrMakeConf, path, n+1)
			}
			cur = strings.TrimSpace(t[1:end])
		case cur == section:
			k, v, ok := strings.Cut(t, "=")
			if !ok {
				k, v, ok = strings.Cut(t, ":")
			}
			if ok && slices.Contains([]string{key}, strings.ToLower(strings.TrimSpace(k))) {
				val = strings.TrimSpace(v)
			}
		}
	}
	return val, nil
}
