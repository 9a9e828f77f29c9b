package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
)

// BenchmarkFetchProcesses is the headline transfer figure: end to end, real
// processes on 127.0.0.1, one 256 MiB build (incompressible) held by one
// providing `gentoo-p2pd daemon`; each iteration starts a fresh fetching
// daemon and times `gentoo-p2pd fetch CPV` (the piece layer, every piece,
// the file SHA-256, the GPKG Manifest, the image and metadata digests
// checked; the file committed to the cache). In the same iteration, as
// references: curl downloading the same file from nginx over HTTPS (TLS
// 1.3, sendfile) to disk, and — when kubo's `ipfs` is on PATH or in
// $IPFS — `ipfs cat` of it on a second kubo node from a first that added
// it. CPU is user+system of every process involved (both daemons and the
// CLI; nginx's workers and curl; both kubo daemons and the CLI), read from
// /proc and rusage.
//
//	scripts/bench-fetch.sh   (go test -run '^$' -bench FetchProcesses -benchtime 1x -count 3 ./integration/)
//
// nginx and curl must be installed (Debian: apt-get install nginx curl);
// without nginx the benchmark fails rather than report no reference.
func BenchmarkFetchProcesses(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
			b.Fatalf("nginx is needed for the reference (apt-get install nginx): %v", err)
		}
		nginx = "/usr/sbin/nginx"
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		b.Fatalf("curl is needed for the reference: %v", err)
	}
	ipfs := os.Getenv("IPFS")
	if ipfs == "" {
		ipfs, _ = exec.LookPath("ipfs")
	}

	dir := b.TempDir()
	pkg := xferBigGPKG(b, dir, 256<<20, 7, "")
	size := float64(pkg.Size)

	provEnv := benchEnv(filepath.Join(dir, "provider"))
	pkgdir := filepath.Join(dir, "provider", "binpkgs")
	xferInstall(b, pkg, pkgdir)
	prov := startProcess(b, provEnv, append(loopbackFlags, "--pkgdir", pkgdir)...)
	pst := waitStatus(b, prov, provEnv, "the provider to share its build", func(s api.Status) bool { return s.PackagesShared == 1 })
	provAddr := pst.Addrs[0] + "/p2p/" + pst.PeerID

	web := startNginx(b, ctx, nginx, dir, filepath.Dir(pkg.Path))
	var kubo *kuboPair
	if ipfs != "" {
		kubo = startKubo(b, ctx, ipfs, dir, pkg.Path)
	} else {
		b.Log("kubo's ipfs not found (PATH or $IPFS): no kubo reference")
	}

	b.ResetTimer()
	for i := range b.N {
		// gentoo-p2pd fetch, from a fresh daemon.
		root := filepath.Join(dir, fmt.Sprintf("fetcher-%d", i))
		env := append(benchEnv(root), "GENTOO_P2PD_TRUST_THRESHOLD=1")
		f := startProcess(b, env, append(loopbackFlags, "--pkgdir", filepath.Join(root, "binpkgs"), "--bootstrap", provAddr)...)
		waitStatus(b, f, env, "the fetcher to hear the provider's attestation", func(s api.Status) bool { return s.CatalogAttestations >= 1 })
		cpu0 := procCPU(b, f.cmd.Process.Pid) + procCPU(b, prov.cmd.Process.Pid)
		start := time.Now()
		cmd := exec.CommandContext(ctx, gentooP2pd(b), "fetch", "--json", pkg.CPV)
		cmd.Env = env
		out, err := cmd.Output()
		took := time.Since(start)
		if err != nil {
			b.Fatalf("gentoo-p2pd fetch: %v\n%s\ndaemon:\n%s", err, out, f.stderr)
		}
		cpu := procCPU(b, f.cmd.Process.Pid) + procCPU(b, prov.cmd.Process.Pid) - cpu0 + rusageCPU(cmd.ProcessState)
		var res api.FetchResult
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("fetch --json: %v\n%s", err, out)
		}
		xferCheckFile(b, res.Path, pkg)
		f.signalAndWait(b, syscall.SIGTERM, 30*time.Second)
		fetchMBs := size / took.Seconds() / 1e6
		b.ReportMetric(fetchMBs, "fetch-MB/s")
		b.ReportMetric(cpu/(size/(1<<30)), "fetch-cpu-s/GiB")

		// nginx over HTTPS, curl to disk.
		mbs, cpu := web.get(b, ctx, curl, filepath.Base(pkg.Path), filepath.Join(dir, fmt.Sprintf("curl-%d", i)))
		b.ReportMetric(mbs, "https-MB/s")
		b.ReportMetric(cpu/(size/(1<<30)), "https-cpu-s/GiB")
		b.ReportMetric(fetchMBs/mbs, "ratio-https")

		if kubo != nil {
			mbs, cpu := kubo.cat(b, ctx, filepath.Join(dir, fmt.Sprintf("kubo-%d", i)))
			b.ReportMetric(mbs, "kubo-MB/s")
			b.ReportMetric(cpu/(size/(1<<30)), "kubo-cpu-s/GiB")
			b.ReportMetric(fetchMBs/mbs, "ratio-kubo")
		}
	}
}

// benchEnv is procEnv with the fixture's portage settings, so both daemons
// are on the platform the generated build belongs to, and a DHT server
// on a network of two.
func benchEnv(root string) []string {
	fp := testnet.FixturePortage
	return append(procEnv(root),
		"GENTOO_P2PD_PORTAGE_CHOST="+fp.CHOST, "GENTOO_P2PD_PORTAGE_CFLAGS="+fp.CFLAGS,
		"GENTOO_P2PD_PORTAGE_CXXFLAGS="+fp.CXXFLAGS, "GENTOO_P2PD_PORTAGE_LDFLAGS="+fp.LDFLAGS,
		"GENTOO_P2PD_PORTAGE_ARCH="+fp.ARCH, "GENTOO_P2PD_PORTAGE_REPO=", "GENTOO_P2PD_NETWORK_DHT_MODE=server")
}

// procCPU is the user+system CPU seconds pid and its reaped children used
// so far (/proc/PID/stat fields 14-17).
func procCPU(tb testing.TB, pid int) float64 {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	var ticks float64
	for _, f := range fields[11:15] { // utime stime cutime cstime
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += v
	}
	return ticks / 100 // USER_HZ is 100 on Linux
}

// treeCPU is procCPU over pid and its live descendants.
func treeCPU(tb testing.TB, pid int) float64 {
	tb.Helper()
	total := procCPU(tb, pid)
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, c := range strings.Fields(string(raw)) {
		if cp, err := strconv.Atoi(c); err == nil {
			total += treeCPU(tb, cp)
		}
	}
	return total
}

func rusageCPU(ps *os.ProcessState) float64 {
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

// freePort returns a TCP port on 127.0.0.1 nobody listens on now.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// webServer is nginx serving one directory over HTTPS on 127.0.0.1.
type webServer struct {
	cmd    *exec.Cmd
	url    string
	cacert string
}

// startNginx runs nginx in the foreground with a config of its own (TLS
// 1.3 only, a fresh ECDSA P-256 certificate, sendfile on, one worker as
// on a small binhost) serving root; it is stopped at the end.
func startNginx(tb testing.TB, ctx context.Context, bin, dir, root string) *webServer {
	tb.Helper()
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(ndir, "tmp"), 0o755); err != nil {
		tb.Fatal(err)
	}
	cert, key := selfSigned(tb, ndir)
	port := freePort(tb)
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 64; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	client_body_temp_path %[1]s/tmp;
	proxy_temp_path %[1]s/tmp;
	fastcgi_temp_path %[1]s/tmp;
	uwsgi_temp_path %[1]s/tmp;
	scgi_temp_path %[1]s/tmp;
	server {
		listen 127.0.0.1:%[2]d ssl;
		ssl_protocols TLSv1.3;
		ssl_certificate %[3]s;
		ssl_certificate_key %[4]s;
		root %[5]s;
	}
}
`, ndir, port, cert, key, root)
	confPath := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath, "-p", ndir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // nginx's graceful stop
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := testnet.WaitFor(ctx, waitTimeout, "nginx to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		tb.Fatal(err)
	}
	return &webServer{cmd: cmd, url: "https://" + addr + "/", cacert: cert}
}

// get downloads name with curl into out and returns MB/s and the CPU
// seconds of curl and nginx.
func (w *webServer) get(tb testing.TB, ctx context.Context, curl, name, out string) (mbs, cpu float64) {
	tb.Helper()
	cpu0 := treeCPU(tb, w.cmd.Process.Pid)
	start := time.Now()
	cmd := exec.CommandContext(ctx, curl, "-sS", "--fail", "--tlsv1.3", "--cacert", w.cacert, "-o", out, w.url+name)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("curl: %v\n%s", err, b)
	}
	took := time.Since(start)
	cpu = treeCPU(tb, w.cmd.Process.Pid) - cpu0 + rusageCPU(cmd.ProcessState)
	return takeMBps(tb, out, took), cpu
}

// selfSigned writes a certificate for 127.0.0.1 and its key below dir.
func selfSigned(tb testing.TB, dir string) (cert, key string) {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return cert, key
}

// kuboPair is two kubo daemons on 127.0.0.1: a holds the file, b fetches
// it with `ipfs cat`.
type kuboPair struct {
	bin    string
	a, b   *exec.Cmd
	envB   []string
	cid    string
	pathsA string
}

// startKubo initializes two kubo repos (test profile: loopback, no
// bootstrap, no mDNS), starts both daemons, adds file on the first and
// connects the second to it.
func startKubo(tb testing.TB, ctx context.Context, bin, dir, file string) *kuboPair {
	tb.Helper()
	k := &kuboPair{bin: bin}
	envs := make([][]string, 2)
	cmds := make([]*exec.Cmd, 2)
	for i, name := range []string{"kubo-a", "kubo-b"} {
		repo := filepath.Join(dir, name)
		envs[i] = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + repo, "IPFS_PATH=" + repo}
		kuboRun(tb, ctx, bin, envs[i], "init", "--profile=test")
		kuboRun(tb, ctx, bin, envs[i], "config", "Addresses.API", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(tb)))
		kuboRun(tb, ctx, bin, envs[i], "config", "Addresses.Gateway", "")
		kuboRun(tb, ctx, bin, envs[i], "config", "--json", "Addresses.Swarm", fmt.Sprintf(`["/ip4/127.0.0.1/tcp/%d"]`, freePort(tb)))
		cmd := exec.Command(bin, "daemon", "--offline=false")
		cmd.Env = envs[i]
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			tb.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
		tb.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
		cmds[i] = cmd
		if err := testnet.WaitFor(ctx, waitTimeout, name+" to answer", func() bool {
			// Not a command: one run while the daemon starts may take the
			// repo lock from it.
			log, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			return strings.Contains(string(log), "Daemon is ready")
		}); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			tb.Fatalf("%v; its log:\n%s", err, log)
		}
	}
	k.a, k.b, k.envB = cmds[0], cmds[1], envs[1]
	k.cid = strings.TrimSpace(kuboRun(tb, ctx, bin, envs[0], "add", "-Q", "--pin", file))
	var id struct{ ID string }
	if err := json.Unmarshal([]byte(kuboRun(tb, ctx, bin, envs[0], "id")), &id); err != nil {
		tb.Fatal(err)
	}
	addrs := strings.Fields(kuboRun(tb, ctx, bin, envs[0], "swarm", "addrs", "local", "--id"))
	if len(addrs) == 0 {
		tb.Fatal("kubo-a has no local address")
	}
	k.pathsA = addrs[0]
	kuboRun(tb, ctx, bin, k.envB, "swarm", "connect", addrs[0])
	return k
}

// cat times `ipfs cat` of the file on b into out (b's blockstore is
// emptied first, so every iteration fetches it again) and returns MB/s
// and the CPU seconds of both daemons and the CLI.
func (k *kuboPair) cat(tb testing.TB, ctx context.Context, out string) (mbs, cpu float64) {
	tb.Helper()
	kuboRun(tb, ctx, k.bin, k.envB, "repo", "gc", "--silent")
	kuboRun(tb, ctx, k.bin, k.envB, "swarm", "connect", k.pathsA)
	cpu0 := procCPU(tb, k.a.Process.Pid) + procCPU(tb, k.b.Process.Pid)
	f, err := os.Create(out)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, k.bin, "cat", k.cid)
	cmd.Env = k.envB
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("ipfs cat: %v\n%s", err, stderr.String())
	}
	took := time.Since(start)
	cpu = procCPU(tb, k.a.Process.Pid) + procCPU(tb, k.b.Process.Pid) - cpu0 + rusageCPU(cmd.ProcessState)
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return takeMBps(tb, out, took), cpu
}

func kuboRun(tb testing.TB, ctx context.Context, bin string, env []string, args ...string) string {
	tb.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		tb.Fatalf("ipfs %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

// BenchmarkFetchInProcess is one 256 MiB fetch between two daemons in this
// process (the provider made once, a fresh fetcher per iteration), for a
// CPU profile of the fetch alone: with FETCH_CPUPROFILE=FILE set, the
// profile of the fetch calls (not the setup) is written to FILE.
//
//	FETCH_CPUPROFILE=/tmp/fetch.cpu go test -run '^$' -bench FetchInProcess -benchtime 1x ./integration/
//	go tool pprof -top /tmp/fetch.cpu
func BenchmarkFetchInProcess(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := b.TempDir()
	pkg := xferBigGPKG(b, dir, 256<<20, 7, "")
	a := xferStart(b, ctx, dir, xferNodeSpec{Name: "a", Pkgs: []xferPkg{pkg}})
	var prof *os.File
	if path := os.Getenv("FETCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		prof = f
	}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		f := xferStart(b, ctx, dir, xferNodeSpec{Name: fmt.Sprintf("f%d", i), Threshold: 1}, a.Addr())
		xferWait(b, ctx, "catalog", func() bool { return f.Daemon.API().Status(ctx).CatalogAttestations >= 1 })
		if prof != nil && i == 0 {
			if err := pprof.StartCPUProfile(prof); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		if _, err := f.Daemon.API().Fetch(ctx, api.FetchRequest{Query: pkg.CPV}); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(pkg.Size)/time.Since(start).Seconds()/1e6, "MB/s")
		b.StopTimer()
		if prof != nil && i == 0 {
			pprof.StopCPUProfile()
		}
		xferStop(b, f)
		b.StartTimer()
	}
}

// takeMBps is the rate at which the file out arrived in took, in MB/s; the
// file is removed.
func takeMBps(tb testing.TB, out string, took time.Duration) float64 {
	tb.Helper()
	st, err := os.Stat(out)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Remove(out); err != nil {
		tb.Fatal(err)
	}
	return float64(st.Size()) / took.Seconds() / 1e6
}
