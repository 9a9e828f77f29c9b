package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/scan"
)

// The build command's environment: the job, and where it may write.
// packaging/gentoo-p2pd-build documents what it does with them.
const (
	// EnvCPV is the package to build, category/package-version.
	EnvCPV = "GENTOO_P2PD_BUILD_CPV"
	// EnvUSE is the USE flags the variant has, space-separated.
	EnvUSE = "GENTOO_P2PD_BUILD_USE"
	// EnvVariant is the variant key wanted (for logs; the build cannot
	// choose it).
	EnvVariant = "GENTOO_P2PD_BUILD_VARIANT"
	// EnvRoot is the builder's root (build.root): the command writes
	// nowhere else.
	EnvRoot = "GENTOO_P2PD_BUILD_ROOT"
	// EnvPKGDIR is where the binpkg goes (ROOT/pkgdir).
	EnvPKGDIR = "GENTOO_P2PD_BUILD_PKGDIR"
	// EnvWork is this job's scratch directory below ROOT/jobs, removed
	// after the build.
	EnvWork = "GENTOO_P2PD_BUILD_WORK"
	// EnvJobs is the parallel make jobs the build may use.
	EnvJobs = "GENTOO_P2PD_BUILD_JOBS"
)

// maxLogs is how many build logs Root/logs keeps.
const maxLogs = 32

// build runs the build command for j and hands what it wrote to PKGDIR
// to the announcer.
func (b *Builder) build(ctx context.Context, j *job) (r outcome) {
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	b.mu.Lock()
	b.seq++
	id := fmt.Sprintf("%s-%d", time.Now().UTC().Format("20060102T150405"), b.seq)
	b.mu.Unlock()
	work := filepath.Join(b.o.Root, "jobs", id)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return outcome{err: err}
	}
	// The job's scratch (portage's build directory among it) goes
	// whatever the outcome: the disk budget counts Root.
	defer func() {
		if err := os.RemoveAll(work); err != nil {
			b.log.Warn("builder: remove scratch", "dir", work, "err", err)
		}
	}()
	before, err := pkgdirFiles(b.pkgdir)
	if err != nil {
		return outcome{err: err}
	}
	logPath := filepath.Join(b.o.Root, "logs", id+"-"+strings.ReplaceAll(j.CPV, "/", "_")+".log")
	r.cpu, err = b.runCommand(ctx, j, work, logPath)
	pruneLogs(filepath.Join(b.o.Root, "logs"))
	if err != nil {
		r.err = err
		return r
	}
	after, err := pkgdirFiles(b.pkgdir)
	if err != nil {
		r.err = err
		return r
	}
	var written []string
	for p, st := range after {
		if before[p] != st {
			written = append(written, p)
		}
	}
	slices.Sort(written)
	// Every file written is announced; the build's result is its CPV's
	// (another build running beside it writes into the same PKGDIR), the
	// wanted variant if it is among them.
	for _, p := range written {
		lp, err := b.o.Announcer.Announce(ctx, p)
		if err != nil {
			r.err = fmt.Errorf("index the build: %w", err)
			return r
		}
		if lp.CPV != j.CPV || r.path != "" && r.built == "" {
			continue
		}
		r.path, r.built = p, ""
		if lp.VariantKey != string(j.Variant) {
			r.built = keys.Variant(lp.VariantKey)
		}
	}
	if r.path == "" {
		r.err = fmt.Errorf("%s exited 0 but wrote no binpkg of %s into %s (log: %s)", b.o.Command[0], j.CPV, b.pkgdir, logPath)
	}
	return r
}

// runCommand runs the build command at the builder's niceness, killing its
// whole process group on timeout or cancellation, and returns the CPU time
// (user + system) the command and the children it waited for used.
func (b *Builder) runCommand(ctx context.Context, j *job, work, logPath string) (time.Duration, error) {
	if b.o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.o.Timeout)
		defer cancel()
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, b.o.Command[0], b.o.Command[1:]...)
	cmd.Dir = work
	cmd.Env = append(os.Environ(),
		EnvCPV+"="+j.CPV,
		EnvUSE+"="+strings.Join(j.USE, " "),
		EnvVariant+"="+string(j.Variant),
		EnvRoot+"="+b.o.Root,
		EnvPKGDIR+"="+b.pkgdir,
		EnvWork+"="+work,
		EnvJobs+"="+strconv.Itoa(b.o.Jobs),
	)
	var tail tailBuffer
	// One writer for both, so exec writes from one goroutine at a time.
	out := &teeLog{f: logf, tail: &tail}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a timeout kills portage and the compilers
	// under it, not only the script.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", b.o.Command[0], err)
	}
	if b.o.Nice != 0 {
		// The group is the command alone this early; what it starts later
		// inherits the niceness.
		if err := syscall.Setpriority(syscall.PRIO_PGRP, cmd.Process.Pid, b.o.Nice); err != nil {
			b.log.Warn("builder: set niceness", "nice", b.o.Nice, "err", err)
		}
	}
	err = cmd.Wait()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %v (build.timeout)", b.o.Timeout)
		}
		return cpu, fmt.Errorf("%s: %w (log: %s)\n%s", b.o.Command[0], err, logPath, tail.String())
	}
	return cpu, nil
}

// pkgdirFiles lists the binpkgs in dir by path, with their stat.
func pkgdirFiles(dir string) (map[string][3]int64, error) {
	files, err := scan.Scan(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string][3]int64, len(files))
	for _, f := range files {
		out[f.Path] = [3]int64{f.Size, f.MTimeNS, int64(f.Inode)}
	}
	return out, nil
}

// diskUsage is the disk space the files below root take (allocated
// blocks, so a sparse file counts what it holds).
func diskUsage(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// readLoadAvg reads the one-minute load average from /proc/loadavg.
func readLoadAvg() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("/proc/loadavg is empty")
	}
	return strconv.ParseFloat(f[0], 64)
}

// numCPU is the cores the load average is compared with.
func numCPU() int { return runtime.NumCPU() }

// pruneLogs keeps the newest maxLogs build logs (their names start with
// the time).
func pruneLogs(dir string) {
	es, err := os.ReadDir(dir)
	if err != nil || len(es) <= maxLogs {
		return
	}
	for _, e := range es[:len(es)-maxLogs] {
		_ = os.Remove(filepath.Join(dir, e.Name())) // best effort: logs only
	}
}

// teeLog writes the command's output to its log and keeps the tail for
// the error.
type teeLog struct {
	f    *os.File
	tail *tailBuffer
}

func (t *teeLog) Write(p []byte) (int, error) {
	t.tail.Write(p)
	return t.f.Write(p)
}

// tailBuffer keeps the last tailBytes written.
type tailBuffer struct{ b []byte }

const tailBytes = 2048

func (t *tailBuffer) Write(p []byte) {
	t.b = append(t.b, p...)
	if len(t.b) > tailBytes {
		t.b = t.b[len(t.b)-tailBytes:]
	}
}

func (t *tailBuffer) String() string {
	s := t.b
	if i := bytes.IndexByte(s, '\n'); i >= 0 && len(t.b) == tailBytes {
		s = s[i+1:] // start at a whole line
	}
	return strings.TrimRight(string(s), "\n")
}
