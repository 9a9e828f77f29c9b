package main

import (
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// allCommands is every command of the CLI but cobra's own (help,
// completion), as its argument path.
func allCommands() [][]string {
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(newRootCmd(), nil)
	return out
}

var flagLine = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z-]+)(?: (\S+))?\s{2,}`)

// TestHelpReadsRight: in every command's help each flag's placeholder is a
// name in capitals (not a word of its text, as pflag takes a backquoted
// one), no backquote is left, and every command has an example.
func TestHelpReadsRight(t *testing.T) {
	for _, path := range allCommands() {
		out, _, err := runCLI(t, append(path, "--help")...)
		name := strings.Join(append([]string{"gentoo-p2pd"}, path...), " ")
		if err != nil {
			t.Fatalf("%s --help: %v", name, err)
		}
		if !strings.Contains(out, "\nExamples:\n") {
			t.Errorf("%s: no example in its help", name)
		}
		if strings.ContainsAny(out, "`\x00") {
			t.Errorf("%s: backquote or marker left in help:\n%s", name, out)
		}
		for _, m := range flagLine.FindAllStringSubmatch(out, -1) {
			if ph := m[2]; ph != "" && !regexp.MustCompile(`^[A-Z][A-Z:_]*$`).MatchString(ph) {
				t.Errorf("%s: --%s shows placeholder %q", name, m[1], ph)
			}
		}
	}
	out, _, _ := runCLI(t, "daemon", "--help")
	for _, want := range []string{"--mode MODE ", "one of consume (fetch", "--log-level LEVEL ", "one of debug, info, warn or error",
		"--dht-mode MODE ", "--gateway-listen HOST:PORT ", "--threshold N "} {
		if !strings.Contains(out, want) {
			t.Errorf("daemon --help lacks %q:\n%s", want, out)
		}
	}
}

// TestDaemonFlagsOnlyOnDaemon: the daemon's settings are flags of daemon
// alone; other commands refuse them.
func TestDaemonFlagsOnlyOnDaemon(t *testing.T) {
	daemonHelp, _, _ := runCLI(t, "daemon", "--help")
	for _, f := range []string{"--mode", "--threshold", "--listen", "--bootstrap", "--log-level", "--metrics-listen", "--cache-dir", "--api-socket"} {
		if !strings.Contains(daemonHelp, f+" ") {
			t.Errorf("daemon --help lacks %s", f)
		}
	}
	for _, path := range allCommands() {
		if len(path) == 0 || path[0] == "daemon" {
			continue
		}
		out, _, _ := runCLI(t, append(path, "--help")...)
		for _, f := range []string{"--listen", "--bootstrap", "--log-level", "--dht-mode", "--metrics-listen", "--cache-dir"} {
			if strings.Contains(out, f+" ") {
				t.Errorf("%v --help shows the daemon flag %s", path, f)
			}
		}
	}
	for _, args := range [][]string{
		{"inspect", "--threshold", "9", "x.tbz2"},
		{"find", "--mode", "consume", "app-misc/hello"},
		{"status", "--log-level", "debug"},
		{"demo", "--api-socket", "/tmp/x.sock"},
	} {
		_, _, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), "unknown flag: "+args[1]) {
			t.Errorf("%v: err = %v, want unknown flag %s", args, err, args[1])
		}
	}
}

func TestVersion(t *testing.T) {
	want := "gentoo-p2pd " + version + " (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, err := runCLI(t, args...)
		if err != nil || out != want {
			t.Errorf("%v: %q, %v; want %q", args, out, err, want)
		}
	}
}
