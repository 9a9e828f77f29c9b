package integration

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// BenchmarkIndexPKGDIR measures a daemon's first start on a PKGDIR of
// many distinct builds (GENTOO_P2PD_BENCH_PACKAGES, default 10,000) as
// whole processes, side by side with `gentoo-p2pd inspect` of the same
// files: wall time until the daemon logs the PKGDIR indexed and attested,
// its CPU time and its peak RSS (VmHWM), against inspect's. VmHWM counts
// the pages of the store's memory-mapped database the daemon touched;
// index_peak_anon_MB (RssAnon sampled every 50 ms) is its own memory
// alone. The builds are
// the real portage-written multi-instance fixtures re-packed with their
// own metadata (environment.bz2 included) under a fresh BUILD_ID, each
// with one extra file so that every image, and so every content id, is
// distinct.
//
//	go test -run '^$' -bench BenchmarkIndexPKGDIR -benchtime 1x -timeout 60m ./integration/
func BenchmarkIndexPKGDIR(b *testing.B) {
	n := 10000
	if s := os.Getenv("GENTOO_P2PD_BENCH_PACKAGES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("GENTOO_P2PD_BENCH_PACKAGES=%q: want a positive count", s)
		}
	}
	dir := b.TempDir()
	pkgdir := filepath.Join(dir, "binpkgs")
	files := writeBenchPKGDIR(b, filepath.Join(dir, "src"), pkgdir, n)
	bin := gentooP2pd(b)

	for i := 0; i < b.N; i++ {
		// inspect: one process reading every file.
		start := time.Now()
		cmd := exec.Command(bin, append([]string{"inspect"}, files...)...)
		cmd.Stdout = io.Discard
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Run(); err != nil {
			b.Fatalf("inspect: %v\n%s", err, errb.String())
		}
		inspectWall := time.Since(start)
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		inspectCPU := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		inspectRSS := ru.Maxrss << 10

		// The daemon's first start on the same PKGDIR.
		root := filepath.Join(dir, fmt.Sprintf("proc%d", i))
		fp := testnet.FixturePortage
		env := append(procEnv(root),
			"GENTOO_P2PD_PORTAGE_CHOST="+fp.CHOST, "GENTOO_P2PD_PORTAGE_CFLAGS="+fp.CFLAGS,
			"GENTOO_P2PD_PORTAGE_CXXFLAGS="+fp.CXXFLAGS, "GENTOO_P2PD_PORTAGE_LDFLAGS="+fp.LDFLAGS,
			"GENTOO_P2PD_PORTAGE_ARCH="+fp.ARCH)
		start = time.Now()
		p := startProcess(b, env, append(loopbackFlags, "--pkgdir", pkgdir)...)
		var hwm, anonPeak int64
		for !strings.Contains(p.stderr.String(), "PKGDIR changed") {
			if p.exited() {
				b.Fatalf("daemon exited: %v\n%s", p.err, p.stderr)
			}
			if time.Since(start) > 30*time.Minute {
				b.Fatalf("daemon did not index %d builds in 30 minutes\n%s", n, p.stderr)
			}
			if h, err := procStatusKB(p.cmd.Process.Pid, "VmHWM:"); err == nil {
				hwm = h << 10
			}
			if a, err := procStatusKB(p.cmd.Process.Pid, "RssAnon:"); err == nil {
				anonPeak = max(anonPeak, a<<10)
			}
			time.Sleep(50 * time.Millisecond) // a sampling interval, not a wait for an outcome
		}
		indexWall := time.Since(start)
		if h, err := procStatusKB(p.cmd.Process.Pid, "VmHWM:"); err == nil {
			hwm = h << 10
		}
		cpu := time.Duration(procCPU(b, p.cmd.Process.Pid) * float64(time.Second))
		// VmHWM counts the store's memory-mapped file too; split the
		// resident set at the end into anonymous memory and mapped file.
		anon, err1 := procStatusKB(p.cmd.Process.Pid, "RssAnon:")
		file, err2 := procStatusKB(p.cmd.Process.Pid, "RssFile:")
		if err1 != nil || err2 != nil {
			b.Fatal(err1, err2)
		}
		if strings.Contains(p.stderr.String(), "skipping binpkg") {
			b.Fatalf("daemon rejected generated builds:\n%s", p.stderr)
		}
		p.signalAndWait(b, syscall.SIGTERM, waitTimeout)

		b.ReportMetric(indexWall.Seconds(), "index_s")
		b.ReportMetric(inspectWall.Seconds(), "inspect_s")
		b.ReportMetric(inspectWall.Seconds()/indexWall.Seconds(), "speed_vs_inspect")
		b.ReportMetric(cpu.Seconds(), "index_cpu_s")
		b.ReportMetric(inspectCPU.Seconds(), "inspect_cpu_s")
		b.ReportMetric(float64(hwm)/(1<<20), "index_hwm_MB")
		b.ReportMetric(float64(inspectRSS)/(1<<20), "inspect_hwm_MB")
		b.ReportMetric(float64(anon)/(1<<10), "index_end_anon_MB")
		b.ReportMetric(float64(anonPeak)/(1<<20), "index_peak_anon_MB")
		b.ReportMetric(float64(file)/(1<<10), "index_end_file_MB")
	}
}

// writeBenchPKGDIR writes n distinct GPKGs into pkgdir in the
// multi-instance layout and returns their paths.
func writeBenchPKGDIR(tb testing.TB, srcDir, pkgdir string, n int) []string {
	tb.Helper()
	srcs, err := fixtures.WritePKGDIR(fixtures.MultiInstance, srcDir)
	if err != nil {
		tb.Fatal(err)
	}
	type source struct {
		meta    *xpak.Metadata
		entries []xpak.ImageEntry
		content [][]byte
	}
	var sources []source
	for _, path := range srcs {
		pkg, err := xpak.ReadFile(path, xpak.DefaultLimits())
		if err != nil {
			tb.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			tb.Fatal(err)
		}
		st, _ := f.Stat()
		payload, format, err := xpak.ImagePayload(f, st.Size())
		if err != nil {
			tb.Fatal(err)
		}
		var s source
		s.meta = pkg.Metadata
		err = xpak.WalkImage(payload, format, xpak.DefaultLimits(), func(e xpak.ImageEntry, r io.Reader) error {
			body, err := io.ReadAll(r)
			s.entries, s.content = append(s.entries, e), append(s.content, body)
			return err
		})
		f.Close()
		if err != nil {
			tb.Fatal(err)
		}
		sources = append(sources, s)
	}
	mtime := time.Unix(1795234547, 0)
	files := make([]string, 0, n)
	for i := range n {
		s := sources[i%len(sources)]
		id := i + 1
		meta := xpak.NewMetadata(nil)
		for _, k := range s.meta.Keys() {
			v, _ := s.meta.Raw(k)
			meta.Set(k, v)
		}
		meta.Set("BUILD_ID", []byte(strconv.Itoa(id)+"\n"))
		pf := meta.PF()
		pn := filepath.Base(filepath.Dir(srcs[i%len(srcs)]))
		path := filepath.Join(pkgdir, meta.Category(), pn, fmt.Sprintf("%s-%d.gpkg.tar", pf, id))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		f, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		err = xpak.WriteGPKG(f, xpak.GPKGOptions{Basename: fmt.Sprintf("%s-%d", pf, id), MTime: mtime, TempDir: pkgdir}, meta, func(add xpak.ImageAdder) error {
			for j, e := range s.entries {
				hdr, err := xpak.ServedHeader(e)
				if err != nil {
					return err
				}
				if err := add(hdr, bytes.NewReader(s.content[j])); err != nil {
					return err
				}
			}
			body := fmt.Sprintf("build %d\n", id)
			return add(&tar.Header{Name: "usr/share/gentoo-p2pd-bench/build-" + strconv.Itoa(id), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), Uname: "root", Gname: "root"}, strings.NewReader(body))
		})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, path)
	}
	return files
}

// procStatusKB reads one "Name: N kB" field of /proc/PID/status.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}
