package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("networks: [{name: lan, ports: [a, b]}]\n"), 0o644)
	os.WriteFile(bad, []byte("networks: [{name: lan, ports: [a]}, {name: lan2, ports: [a]}]\nqueues: 99\n"), 0o644)

	var out, errOut bytes.Buffer
	if code := run([]string{"--check-config", good}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "ok") {
		t.Errorf("good config: exit %d, stdout %q stderr %q", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	code := run([]string{"--check-config", bad}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), `port "a" is already in network "lan"`) || !strings.Contains(errOut.String(), "queues: 99") {
		t.Errorf("bad config: exit %d, stderr %q; want 1 and both problems named", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"--check-config", filepath.Join(dir, "missing.yaml")}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut.String())
	}
	if code := run([]string{"--bogus"}, &out, &errOut); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
}

// runningDaemon is an xdpswitchd started by a test: its log (stderr) is
// the Proc's, its stdout (the counters and leases it prints) its own.
type runningDaemon struct {
	*testnet.Proc
	stdout bytes.Buffer
}

func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xdpswitchd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func startDaemon(t *testing.T, bin, config string) *runningDaemon {
	t.Helper()
	d := &runningDaemon{}
	cmd := exec.Command(bin, "--config", config)
	cmd.Stdout = &d.stdout
	d.Proc = testnet.StartProc(t, cmd)
	return d
}

func writeConfig(t *testing.T, runDir string, ports ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xdpswitch.yaml")
	cfg := fmt.Sprintf("run_dir: %s\nstate_dir: %s\nframes: 4096\nnetworks:\n  - name: lan\n    ports: [%s]\n", runDir, t.TempDir(), strings.Join(ports, ", "))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDaemon(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	bin := buildDaemon(t)
	var hosts []*testnet.Host
	var ports []string
	for i := 1; i <= 3; i++ {
		h := testnet.NewHost(t, fmt.Sprintf("10.79.0.%d/24", i))
		hosts = append(hosts, h)
		ports = append(ports, h.Port)
	}
	runDir := t.TempDir()
	cfgPath := writeConfig(t, runDir, ports[:2]...)
	d := startDaemon(t, bin, cfgPath)
	d.WaitLine(t, "xdpswitchd ready", 20*time.Second)

	// SIGHUP applies the config as it is now: the third port plugged in.
	// A config that does not parse changes nothing, and the switch runs on.
	edit := func(from, to string) {
		t.Helper()
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(b), from, to, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit(ports[1], ports[1]+", "+ports[2])
	d.Cmd.Process.Signal(syscall.SIGHUP)
	d.WaitLine(t, `msg="config reloaded"`, 20*time.Second)
	edit("networks:", "networks: [")
	d.Cmd.Process.Signal(syscall.SIGHUP)
	if l := d.WaitLine(t, `msg="config reload"`, 20*time.Second); !strings.Contains(l, "level=ERROR") {
		t.Errorf("a config that does not parse, reloaded: %s", l)
	}

	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				if err := a.Ping(b.IP.String(), 2); err != nil {
					t.Fatalf("%v\ndaemon log:\n%s", err, d.Output())
				}
			}
		}
	}

	// A second daemon is refused: by the lock with the same run dir, by the
	// devices' programs with another.
	second := startDaemon(t, bin, writeConfig(t, runDir, ports...))
	if code := second.WaitExit(t, 20*time.Second); code != 1 || !strings.Contains(second.Output(), fmt.Sprintf("another xdpswitchd (pid %d)", d.Cmd.Process.Pid)) {
		t.Errorf("second daemon, same run dir: exit %d, log:\n%s", code, second.Output())
	}
	third := startDaemon(t, bin, writeConfig(t, t.TempDir(), ports[0]))
	if code := third.WaitExit(t, 20*time.Second); code != 1 || !strings.Contains(third.Output(), "already runs an XDP program") {
		t.Errorf("second daemon, same device: exit %d, log:\n%s", code, third.Output())
	}
	// The refused daemons left the first one's programs alone.
	if err := hosts[0].Ping(hosts[1].IP.String(), 1); err != nil {
		t.Fatalf("after the refused daemons: %v", err)
	}

	d.Cmd.Process.Signal(syscall.SIGTERM)
	if code := d.WaitExit(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, log:\n%s", code, d.Output())
	}
	for _, p := range ports {
		l, err := netlink.LinkByName(p)
		if err != nil {
			t.Fatal(err)
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			t.Errorf("%s still has an XDP program after shutdown", p)
		}
	}
	out := d.stdout.String()
	for _, p := range ports {
		if !strings.Contains(out, p) {
			t.Errorf("counters at exit do not list %s:\n%s", p, out)
		}
	}
	// Every frame was where the switch believed, to the end.
	if !regexp.MustCompile(`(?m)^0 +\d+ .* ok$`).MatchString(out) {
		t.Errorf("frames at exit not accounted for:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(runDir, "xdpswitchd.lock")); !os.IsNotExist(err) {
		t.Errorf("lock file left behind: %v", err)
	}
}

func TestDaemonRefusesMissingDevice(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	bin := buildDaemon(t)
	h := testnet.NewHost(t, "")
	d := startDaemon(t, bin, writeConfig(t, t.TempDir(), h.Port, "xsnosuchdev"))
	if code := d.WaitExit(t, 20*time.Second); code != 1 || !strings.Contains(d.Output(), "xsnosuchdev") {
		t.Errorf("exit %d, log:\n%s", code, d.Output())
	}
	// The port that was plugged before the failure is unplugged again.
	l, err := netlink.LinkByName(h.Port)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("%s kept an XDP program after the failed start", h.Port)
	}
}
