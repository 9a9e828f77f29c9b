package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsNameOnlyFilesInTheRepository: every .md, .sh or .py file the
// README and docs/ name exists in the repository, so a reader can open it
// (a DESIGN.md called authoritative, a harness script cited as a check).
// Files of the separate portage harness are named by their ../shared/
// path, which says they are outside; portage's own sources are named as
// portage's.
func TestDocsNameOnlyFilesInTheRepository(t *testing.T) {
	root := ".."
	have := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return fs.SkipDir
		}
		rel, _ := filepath.Rel(root, p)
		have[rel], have[d.Name()] = true, true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	docs = append(docs, filepath.Join(root, "README.md"), filepath.Join(root, "config", "REFERENCE.md"))
	portages := map[string]bool{"gpkg.py": true} // "portage's `gpkg.py` rules"
	name := regexp.MustCompile(`[\w./-]*[\w-]\.(md|sh|py)\b`)
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range name.FindAllString(string(b), -1) {
			if strings.HasPrefix(n, "../shared/") || strings.Contains(n, "://") || portages[n] {
				continue
			}
			if !have[strings.TrimPrefix(n, "./")] {
				t.Errorf("%s names %s, which the repository does not contain", doc, n)
			}
		}
	}
}
