package portagehook

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// snapshot returns every regular file under root (gnupg excepted: gpg
// rewrites its own files) with its content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && rel == filepath.Join("etc", "portage", "gnupg") {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files[rel] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func sameFiles(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s is %q, want %q", what, k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected file %s", what, k)
		}
	}
}

func TestSetupPortage(t *testing.T) {
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatal("gpg not installed: setup-portage imports the key with gpg (.ci/run installs gnupg)")
	}
	e := testKey(t)
	pub, err := ExportPublic(e)
	if err != nil {
		t.Fatal(err)
	}
	userBashrc := "# my own hooks\npost_pkg_postinst() { echo mine; }" // no final newline
	for _, tc := range []struct {
		name     string
		existing map[string]string // files before setup
		binDir   bool              // binrepos.conf is a directory
	}{
		{"fresh system", nil, false},
		{"existing config", map[string]string{
			"etc/portage/bashrc":                           userBashrc,
			"etc/portage/binrepos.conf/gentoobinhost.conf": "[gentoobinhost]\npriority = 1\nsync-uri = https://distfiles.gentoo.org/releases/amd64/binpackages/23.0/x86-64\n",
		}, true},
		{"binrepos.conf is a file", map[string]string{
			"etc/portage/binrepos.conf": "[gentoobinhost]\nsync-uri = https://example.org/binpackages\n",
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tc.existing {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, root)
			// A stand-in for getuto: it creates the keyring directory the
			// way getuto does, and logs that it ran.
			helper := filepath.Join(t.TempDir(), "getuto")
			helperLog := filepath.Join(t.TempDir(), "helper.log")
			if err := os.WriteFile(helper, []byte("#!/bin/sh\necho \"ROOT=$ROOT\" >>"+helperLog+"\nmkdir -p \"$ROOT/etc/portage/gnupg\"\nchmod 755 \"$ROOT/etc/portage/gnupg\"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			opts := SetupOptions{Root: root, GatewayURL: "http://127.0.0.1:7750/gentoo-p2pd/", PublicKeyArmored: pub, TrustHelper: helper,
				Socket: "/run/user/1000/it's gentoo-p2pd.sock"}

			var dry bytes.Buffer
			opts.DryRun, opts.Out = true, &dry
			if err := SetupPortage(opts); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, "dry run", snapshot(t, root), before)
			if _, err := os.Stat(filepath.Join(root, "etc/portage/gnupg")); err == nil {
				t.Error("dry run created the keyring")
			}
			for _, want := range []string{"sync-uri = http://127.0.0.1:7750/gentoo-p2pd\n", "verify-signature = true", Fingerprint(e) + ":6:", MakeConfLine} {
				if !strings.Contains(dry.String(), want) {
					t.Errorf("dry run output lacks %q:\n%s", want, dry.String())
				}
			}

			var out bytes.Buffer
			opts.DryRun, opts.Out = false, &out
			if err := SetupPortage(opts); err != nil {
				t.Fatal(err)
			}
			if raw, _ := os.ReadFile(helperLog); string(raw) != "ROOT="+root+"\n" {
				t.Errorf("trust helper runs: %q, want once with ROOT=%s before the keyring exists", raw, root)
			}
			first := snapshot(t, root)
			bashrc := first["etc/portage/bashrc"]
			if !strings.Contains(bashrc, BashrcSnippet) {
				t.Error("bashrc lacks the hook")
			}
			// The hook runs as root: it must be told the user daemon's socket,
			// quoted for bash, and only in the postinst phase.
			if want := `if [[ ${EBUILD_PHASE} == postinst ]]; then gentoo_p2pd_socket='/run/user/1000/it'\''s gentoo-p2pd.sock'; fi`; !strings.Contains(bashrc, want) {
				t.Errorf("bashrc lacks the socket line %q", want)
			}
			if orig, ok := tc.existing["etc/portage/bashrc"]; ok && !strings.HasPrefix(bashrc, orig) {
				t.Error("the user's bashrc was not kept in front of the hook")
			}
			conf := first["etc/portage/binrepos.conf/gentoo-p2pd.conf"] + first["etc/portage/binrepos.conf"]
			for _, want := range []string{"[gentoo-p2pd]\n", "sync-uri = http://127.0.0.1:7750/gentoo-p2pd\n", "verify-signature = true\n"} {
				if !strings.Contains(conf, want) {
					t.Errorf("binrepos.conf lacks %q:\n%s", want, conf)
				}
			}
			home := filepath.Join(root, "etc/portage/gnupg")
			if !trusted("gpg", home, Fingerprint(e)) {
				t.Fatal("key not trusted ultimately after setup")
			}
			// portage's verification, against the keyring setup made.
			data := []byte("x")
			var sig bytes.Buffer
			if err := NewSigner(e, e.PrimaryKey.CreationTime).DetachSign(&sig, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(t.TempDir(), "x.sig")
			if err := os.WriteFile(sigPath, sig.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			gpgVerify(t, "gpg", home, []string{sigPath, "-"}, data)

			var again bytes.Buffer
			opts.Out = &again
			if err := SetupPortage(opts); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, "second run", snapshot(t, root), first)
			if raw, _ := os.ReadFile(helperLog); strings.Count(string(raw), "ROOT=") != 1 {
				t.Errorf("trust helper ran again on an existing keyring: %q", raw)
			}
			if strings.Contains(again.String(), "write ") || strings.Contains(again.String(), "add the") || strings.Contains(again.String(), "import key") {
				t.Errorf("second run reports changes:\n%s", again.String())
			}

			if !strings.Contains(conf, markKey+Fingerprint(e)+" ") {
				t.Errorf("binrepos.conf does not record the key for --undo:\n%s", conf)
			}

			// --undo as the CLI runs it: no gateway URL, no key, so the
			// key to delete is the one setup recorded.
			opts.Undo, opts.Out = true, &out
			opts.GatewayURL, opts.PublicKeyArmored = "", nil
			opts.DryRun = true
			if err := SetupPortage(opts); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, "undo dry run", snapshot(t, root), first)
			opts.DryRun = false
			if err := SetupPortage(opts); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, "undo", snapshot(t, root), before)
			if trusted("gpg", home, Fingerprint(e)) {
				t.Error("key still trusted ultimately after undo")
			}
			if exec.Command("gpg", "--homedir", home, "--batch", "--list-keys", Fingerprint(e)).Run() == nil {
				t.Error("key still in the keyring after undo")
			}
			if _, err := os.Stat(filepath.Join(root, "etc/portage/binrepos.conf")); (err == nil) != (tc.binDir || tc.existing["etc/portage/binrepos.conf"] != "") {
				t.Errorf("binrepos.conf after undo: %v", err)
			}
		})
	}
}
