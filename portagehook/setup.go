package portagehook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// ErrSetup reports a setup-portage step that failed.
var ErrSetup = errors.New("portagehook: setup-portage")

// SetupOptions configure SetupPortage.
type SetupOptions struct {
	// Root is the system root: "/" for real use, a test directory in tests.
	Root string
	// GatewayURL is the binhost URL portage fetches from, e.g.
	// "http://127.0.0.1:7750/gentoo-p2pd".
	GatewayURL string
	// PublicKeyArmored is the daemon's armored OpenPGP public key.
	PublicKeyArmored []byte
	// DryRun prints every change and writes nothing.
	DryRun bool
	// Undo removes exactly what an earlier run added, the imported key
	// included: its fingerprint is recorded in our binrepos.conf entry, so
	// Undo needs no PublicKeyArmored.
	Undo bool
	// Out receives the report (what changed, and the make.conf line).
	Out io.Writer
	// Socket is the API socket of the daemon the bashrc hook should talk to
	// (the hook runs as root; the daemon usually as a user). Empty: the
	// hook uses gentoo-p2pd's default.
	Socket string
	// GPG is the gpg binary; "" looks up "gpg" on PATH.
	GPG string
	// TrustHelper initializes a missing /etc/portage/gnupg before the key
	// is imported: "" looks up portage's default, getuto; "none" skips it.
	// getuto sets the keyring up (Gentoo release keys, local trust anchor)
	// only when the directory does not exist, so creating it first would
	// break the official binhost's verification.
	TrustHelper string
}

// BinrepoName is the binrepos.conf section and file name setup-portage
// writes; portage caches the remote index under /var/cache/binhost/<name>.
const BinrepoName = "gentoo-p2pd"

// MakeConfLine is what the user adds to make.conf: buildpkg so builds are
// shared, getbinpkg so trusted builds are used, binary_sharing to enable
// the bashrc hook (portage warns once about the unknown FEATURES value and
// passes it to $FEATURES); and --binpkg-respect-use=y, because with
// --getbinpkgonly (-G) portage 3.0.82 otherwise takes the newest build of
// a version whatever its USE (with -g it already skips other USE).
const MakeConfLine = `FEATURES="buildpkg getbinpkg binary_sharing"
    EMERGE_DEFAULT_OPTS="${EMERGE_DEFAULT_OPTS} --binpkg-respect-use=y"`

const (
	markBegin = "# BEGIN gentoo-p2pd (managed by `gentoo-p2pd setup-portage`; remove with --undo)"
	markEnd   = "# END gentoo-p2pd"
	// markCreated tags a block whose file setup-portage created, so --undo
	// removes the file instead of leaving an empty one.
	markCreated = "# gentoo-p2pd created this file"
	// markNewline tags a block before which setup added the newline the
	// file lacked, so --undo restores the file byte for byte.
	markNewline = "# gentoo-p2pd ended the previous line"
)

// binreposConf is our binrepos.conf section (keys of portage 3.0.82's
// binrepo/config.py). verify-signature = true keeps portage's own OpenPGP
// check on: the gateway serves GPKGs signed by the daemon's key. location
// is the default portage would pick, written out so it is visible.
func binreposConf(url, fpr string) string {
	return fmt.Sprintf("%s%s (--undo deletes it from /etc/portage/gnupg)\n[%s]\npriority = 10\nsync-uri = %s\nlocation = /var/cache/binhost/%s\nverify-signature = true\n",
		markKey, fpr, BinrepoName, strings.TrimRight(url, "/"), BinrepoName)
}

// markKey starts the comment in our binrepos.conf entry that records the
// fingerprint of the key setup imported, for --undo.
const markKey = "# gentoo-p2pd gateway key "

// recordedKey returns the fingerprint recorded in our binrepos.conf entry
// (a file in the binrepos.conf directory, or our block in the file), or "".
func recordedKey(portageDir string) string {
	path := filepath.Join(portageDir, "binrepos.conf")
	text := ""
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
		b, _ := os.ReadFile(path) // unreadable: nothing recorded
		_, text, _, _ = cutBlock(string(b))
	} else if b, err := os.ReadFile(filepath.Join(path, BinrepoName+".conf")); err == nil && bytes.HasPrefix(b, []byte(managedHeader)) {
		text = string(b)
	}
	for l := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(l, markKey); ok {
			fpr, _, _ := strings.Cut(rest, " ")
			return strings.TrimSpace(fpr)
		}
	}
	return ""
}

// SetupPortage configures an unmodified portage to use the gateway, with
// portage's signature verification on: a binrepos.conf entry, the daemon's
// key imported into /etc/portage/gnupg with ultimate ownertrust (portage
// requires GOODSIG plus TRUST_ULTIMATE or TRUST_FULLY), and the bashrc
// hook between marker comments. Running it twice changes nothing; Undo
// removes what it added and nothing else; DryRun only reports.
func SetupPortage(opts SetupOptions) error {
	if opts.Root == "" {
		return fmt.Errorf("%w: Root is empty", ErrSetup)
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	if !opts.Undo && (opts.GatewayURL == "" || len(opts.PublicKeyArmored) == 0) {
		return fmt.Errorf("%w: GatewayURL and PublicKeyArmored are required", ErrSetup)
	}
	s := &setup{opts: opts, out: out}
	portageDir := filepath.Join(opts.Root, "etc", "portage")
	fpr, err := s.fingerprint()
	if err != nil {
		return err
	}
	if fpr == "" && opts.Undo {
		fpr = recordedKey(portageDir) // read before binrepos removes it
	}
	s.fpr = fpr
	steps := []func(string) error{s.binrepos, s.bashrc, s.keyring}
	for _, step := range steps {
		if err := step(portageDir); err != nil {
			return err
		}
	}
	if !opts.Undo {
		fmt.Fprintf(out, "add to %s:\n    %s\n", filepath.Join(portageDir, "make.conf"), MakeConfLine)
	} else {
		fmt.Fprintf(out, "remove binary_sharing (and getbinpkg, if only for gentoo-p2pd) from FEATURES in %s\n", filepath.Join(portageDir, "make.conf"))
	}
	return nil
}

type setup struct {
	opts SetupOptions
	out  io.Writer
	fpr  string // the gateway key's fingerprint; "" on Undo when unknown
}

func (s *setup) binrepos(portageDir string) error {
	path := filepath.Join(portageDir, "binrepos.conf")
	fi, err := os.Stat(path)
	switch {
	case err == nil && !fi.IsDir():
		// binrepos.conf is a single file: manage a marked block in it.
		return s.block(path, "binrepos.conf", binreposConf(s.opts.GatewayURL, s.fpr))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	file := filepath.Join(path, BinrepoName+".conf")
	const managed = managedHeader
	want := []byte(managed + binreposConf(s.opts.GatewayURL, s.fpr))
	have, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Unreadable: neither overwritten nor removed unseen.
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	exists := err == nil
	if s.opts.Undo {
		if !exists {
			return nil
		}
		if !bytes.HasPrefix(have, []byte(managed)) {
			fmt.Fprintf(s.out, "keep %s: not written by setup-portage\n", file)
			return nil
		}
		fmt.Fprintf(s.out, "remove %s\n", file)
		if s.opts.DryRun {
			return nil
		}
		if err := os.Remove(file); err != nil {
			return fmt.Errorf("%w: %v", ErrSetup, err)
		}
		removeIfEmpty(path)
		return nil
	}
	if exists && bytes.Equal(have, want) {
		fmt.Fprintf(s.out, "unchanged %s\n", file)
		return nil
	}
	fmt.Fprintf(s.out, "write %s:\n%s", file, indent(want))
	if s.opts.DryRun {
		return nil
	}
	if err := writeFileAtomic(file, want, 0o644); err != nil {
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	return nil
}

// managedHeader starts the binrepos.conf/gentoo-p2pd.conf setup writes.
const managedHeader = "# managed by `gentoo-p2pd setup-portage`\n"

func (s *setup) bashrc(portageDir string) error {
	body := BashrcSnippet
	if s.opts.Socket != "" {
		// Set in the postinst phase only, like the hook's functions, so it
		// never reaches the environment.bz2 of a binpkg.
		body = fmt.Sprintf("if [[ ${EBUILD_PHASE} == postinst ]]; then gentoo_p2pd_socket=%s; fi\n", shellQuote(s.opts.Socket)) + body
	}
	return s.block(filepath.Join(portageDir, "bashrc"), "bashrc", body)
}

// block adds (or with Undo removes) a marked block at the end of a text
// file, leaving every other byte as it was.
func (s *setup) block(path, what, body string) error {
	have, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	existed := err == nil
	rest, old, created, found := cutBlock(string(have))
	if s.opts.Undo {
		if !found {
			return nil
		}
		if created && rest == "" {
			fmt.Fprintf(s.out, "remove %s (setup-portage created it)\n", path)
			if s.opts.DryRun {
				return nil
			}
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("%w: %v", ErrSetup, err)
			}
			return nil
		}
		fmt.Fprintf(s.out, "remove the gentoo-p2pd block from %s\n", path)
		if s.opts.DryRun {
			return nil
		}
		return s.write(path, []byte(rest))
	}
	sep := ""
	if rest != "" && !strings.HasSuffix(rest, "\n") {
		sep = "\n"
	}
	blk := markBegin + "\n"
	if created || !existed {
		blk += markCreated + "\n"
	}
	if sep != "" {
		blk += markNewline + "\n"
	}
	blk += body
	if !strings.HasSuffix(blk, "\n") {
		blk += "\n"
	}
	blk += markEnd + "\n"
	if found && old == blk {
		fmt.Fprintf(s.out, "unchanged %s\n", path)
		return nil
	}
	want := rest + sep + blk
	fmt.Fprintf(s.out, "add the gentoo-p2pd block to %s (%s):\n%s", path, what, indent([]byte(blk)))
	if s.opts.DryRun {
		return nil
	}
	return s.write(path, []byte(want))
}

func (s *setup) write(path string, data []byte) error {
	perm := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	} else if !errors.Is(err, fs.ErrNotExist) {
		// The file's mode is kept on rewrite: never guessed.
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if err := writeFileAtomic(path, data, perm); err != nil {
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	return nil
}

// cutBlock splits text into the text without our block and the block
// itself. The block is removed together with the one newline setup added
// before it when the file did not end in one.
func cutBlock(text string) (rest, block string, created, found bool) {
	i := strings.Index(text, markBegin+"\n")
	if i < 0 || (i > 0 && text[i-1] != '\n') {
		return text, "", false, false
	}
	j := strings.Index(text[i:], markEnd+"\n")
	if j < 0 {
		return text, "", false, false
	}
	end := i + j + len(markEnd) + 1
	block = text[i:end]
	created = strings.HasPrefix(block, markBegin+"\n"+markCreated+"\n")
	start := i
	if strings.Contains(block, "\n"+markNewline+"\n") && i > 0 {
		start = i - 1 // the newline setup added before the block
	}
	return text[:start] + text[end:], block, created, true
}

func removeIfEmpty(dir string) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) == 0 {
		// Best effort: an empty binrepos.conf directory left behind is
		// what portage reads as no binhosts, like a missing one.
		_ = os.Remove(dir)
	}
}

func indent(b []byte) string {
	var sb strings.Builder
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" {
			sb.WriteString("    " + l)
		}
	}
	return sb.String()
}

// keyring imports the daemon's key into portage's verification keyring
// (BINPKG_GPG_VERIFY_GPG_HOME, /etc/portage/gnupg) with ultimate
// ownertrust, or deletes it on Undo.
func (s *setup) keyring(portageDir string) error {
	home := filepath.Join(portageDir, "gnupg")
	fpr := s.fpr
	gpg := s.opts.GPG
	if gpg == "" {
		gpg = "gpg"
	}
	if s.opts.Undo {
		if fpr == "" {
			fmt.Fprintf(s.out, "keep %s: no key given or recorded, delete the gentoo-p2pd key with gpg --homedir %s --delete-keys <fingerprint>\n", home, home)
			return nil
		}
		if _, err := os.Stat(home); err != nil {
			return nil
		}
		if exec.Command(gpg, "--homedir", home, "--batch", "--list-keys", fpr).Run() != nil {
			return nil
		}
		fmt.Fprintf(s.out, "delete key %s from %s\n", fpr, home)
		if s.opts.DryRun {
			return nil
		}
		if out, err := exec.Command(gpg, "--homedir", home, "--batch", "--yes", "--delete-keys", fpr).CombinedOutput(); err != nil {
			return fmt.Errorf("%w: gpg --delete-keys: %v: %s", ErrSetup, err, out)
		}
		return nil
	}
	if trusted(gpg, home, fpr) {
		fmt.Fprintf(s.out, "unchanged %s: key %s trusted ultimately\n", home, fpr)
		return nil
	}
	fmt.Fprintf(s.out, "import key %s into %s with ultimate ownertrust (%s:6:)\n", fpr, home, fpr)
	if s.opts.DryRun {
		return nil
	}
	if _, err := exec.LookPath(gpg); err != nil {
		return fmt.Errorf("%w: gpg not found (%v): install app-crypt/gnupg", ErrSetup, err)
	}
	if _, err := os.Stat(home); errors.Is(err, fs.ErrNotExist) {
		if err := s.runTrustHelper(home); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(home, 0o755); err != nil {
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	if err := gpgImport(gpg, home, s.opts.PublicKeyArmored, fpr); err != nil {
		return fmt.Errorf("%w: %v", ErrSetup, err)
	}
	// portage verifies as nobody:nogroup (GPG_VERIFY_USER_DROP) when run
	// as root: the keyring must be readable by others, as getuto leaves it.
	for _, f := range []string{"pubring.kbx", "trustdb.gpg"} {
		p := filepath.Join(home, f)
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			err = os.Chmod(p, fi.Mode().Perm()|0o044)
		}
		if err != nil {
			return fmt.Errorf("%w: keyring must be readable by portage's verify user: %w", ErrSetup, err)
		}
	}
	fi, err := os.Stat(home)
	if err == nil {
		err = os.Chmod(home, fi.Mode().Perm()|0o055)
	}
	if err != nil {
		return fmt.Errorf("%w: keyring must be readable by portage's verify user: %w", ErrSetup, err)
	}
	return nil
}

// runTrustHelper lets getuto create the keyring the way portage expects
// (it honours ROOT). Without it the keyring is created with the
// gentoo-p2pd key only, and the report says so.
func (s *setup) runTrustHelper(home string) error {
	helper := s.opts.TrustHelper
	if helper == "none" {
		return nil
	}
	if helper == "" {
		helper = "getuto"
	}
	path, err := exec.LookPath(helper)
	if err != nil {
		fmt.Fprintf(s.out, "warning: %s not found: creating %s with the gentoo-p2pd key only; other binhosts' keys are not trusted there\n", helper, home)
		return nil
	}
	fmt.Fprintf(s.out, "run %s to initialize %s\n", path, home)
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), "ROOT="+s.opts.Root)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s: %v: %s", ErrSetup, path, err, out)
	}
	return nil
}

func (s *setup) fingerprint() (string, error) {
	if len(s.opts.PublicKeyArmored) == 0 {
		return "", nil
	}
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(s.opts.PublicKeyArmored))
	if err != nil || len(el) != 1 {
		return "", fmt.Errorf("%w: public key: want one armored key (%v)", ErrSetup, err)
	}
	return Fingerprint(el[0]), nil
}

// trusted reports whether home already holds fpr with ultimate ownertrust.
func trusted(gpg, home, fpr string) bool {
	if _, err := os.Stat(home); err != nil {
		return false
	}
	out, err := exec.Command(gpg, "--homedir", home, "--batch", "--export-ownertrust").Output()
	if err != nil {
		return false
	}
	return bytes.Contains(out, []byte(fpr+":6:"))
}

// gpgImport imports an armored public key into home, gives fpr ultimate
// ownertrust and rebuilds the trustdb — portage runs gpg with
// --no-auto-check-trustdb, so the trustdb must be current beforehand.
func gpgImport(gpg, home string, pub []byte, fpr string) error {
	run := func(stdin []byte, args ...string) error {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--no-tty"}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("gpg %s: %w: %s", args[0], err, out)
		}
		return nil
	}
	if err := run(pub, "--import"); err != nil {
		return err
	}
	if err := run([]byte(fpr+":6:\n"), "--import-ownertrust"); err != nil {
		return err
	}
	return run(nil, "--check-trustdb")
}

// shellQuote quotes s for bash as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
