// Package e2e tests xdpswitch the way an operator uses it: the daemon and
// vmctl binaries, real QEMU guests attached while they run, and the guests'
// own DHCP clients and pings.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/internal/guest"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// repoRoot is where go build runs and the guest cache lives.
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func build(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, "./"+pkg)
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// startDaemon runs xdpswitchd until the test ends, then stops it as an
// operator would (SIGINT), so that it cleans up after itself.
func startDaemon(t *testing.T, bin, config string) *testnet.Proc {
	t.Helper()
	d := testnet.StartProc(t, exec.Command(bin, "--config", config))
	t.Cleanup(func() {
		d.Cmd.Process.Signal(os.Interrupt)
		d.WaitExit(t, 20*time.Second)
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.Output())
		}
	})
	d.WaitLine(t, "xdpswitchd ready", 30*time.Second)
	return d
}

// vmctl runs the operator tool and fails the test if it fails.
func vmctl(t *testing.T, bin, sock string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"--socket", sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("vmctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func vmctlJSON(t *testing.T, bin, sock string, v any, args ...string) {
	t.Helper()
	out := vmctl(t, bin, sock, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("vmctl %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func ping(t *testing.T, vm *guest.VM, dst string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, code, err := vm.Run(ctx, "ping -c 3 -W 2 "+dst)
	if err != nil || code != 0 {
		t.Fatalf("%s: ping %s: exit %d, %v\n%s\nconsole:\n%s", vm.Name, dst, code, err, out, vm.Console())
	}
}

// qmpDevices lists the xs-* devices QEMU has, over QMP.
func qmpDevices(t *testing.T, socket string) []string {
	t.Helper()
	mon, err := qmp.NewSocketMonitor("unix", socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	raw, err := mon.Run([]byte(`{"execute": "qom-list", "arguments": {"path": "/machine/peripheral"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Return []struct{ Name string } `json:"return"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range resp.Return {
		if strings.HasPrefix(p.Name, "xs-") {
			out = append(out, p.Name)
		}
	}
	return out
}

func TestGuestsThroughTheSwitch(t *testing.T) {
	// The image is built before entering the test's namespace: the first
	// build downloads Debian's kernel package, which a fresh namespace
	// cannot reach.
	img, err := guest.Build(filepath.Join(repoRoot(t), "build", "guest"))
	if err != nil {
		t.Fatal(err)
	}
	if !testnet.InNamespace(t) {
		return
	}
	daemonBin, vmctlBin := build(t, "cmd/xdpswitchd"), build(t, "cmd/vmctl")
	run := t.TempDir()
	sock := filepath.Join(run, "api.sock")
	config := filepath.Join(run, "xdpswitch.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`
run_dir: %s
state_dir: %s
api_socket: %s
frames: 4096
networks:
  - name: e2e
    gateway: 10.91.0.1/24
    dhcp:
      range: [10.91.0.100, 10.91.0.120]
`, run, filepath.Join(run, "state"), sock)), 0o644)
	daemon := startDaemon(t, daemonBin, config)

	// Boot both guests at once: each takes seconds under emulation.
	vms := make([]*guest.VM, 2)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			vms[i], errs[i] = guest.Boot(ctx, guest.BootOptions{Image: img, Name: fmt.Sprintf("g%d", i+1), Dir: filepath.Join(run, fmt.Sprintf("g%d", i+1))})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { vms[i].Close() })
	}

	macs := []string{"52:54:00:91:00:01", "52:54:00:91:00:02"}
	taps := []string{"xs525400910001", "xs525400910002"}
	for i, vm := range vms {
		vmctl(t, vmctlBin, sock, "attach", vm.Name, "--qmp", vm.QMPSocket, "--network", "e2e", "--mac", macs[i])
	}
	ips := make([]string, 2)
	for i, vm := range vms {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		ip, router, mac, err := vm.WaitLease(ctx, "eth0")
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\nconsole:\n%s", vm.Name, err, vm.Console())
		}
		if mac != macs[i] || router != "10.91.0.1" || !strings.HasPrefix(ip, "10.91.0.1") {
			t.Errorf("%s: lease %s router %s on %s", vm.Name, ip, router, mac)
		}
		ips[i] = ip
	}
	if ips[0] == ips[1] {
		t.Fatalf("both guests got %s", ips[0])
	}
	var leases []api.Lease
	vmctlJSON(t, vmctlBin, sock, &leases, "leases")
	if len(leases) != 2 {
		t.Errorf("vmctl leases: %+v", leases)
	}

	ping(t, vms[0], ips[1])
	ping(t, vms[1], ips[0])
	ping(t, vms[0], "10.91.0.1")

	// The daemon restarts (an upgrade, or a crash systemd restarts it
	// after): the guests keep their NICs, whose taps QEMU holds open, and
	// the new daemon plugs them in again.
	daemon.Cmd.Process.Signal(os.Interrupt)
	if code := daemon.WaitExit(t, 20*time.Second); code != 0 {
		t.Fatalf("daemon exit %d:\n%s", code, daemon.Output())
	}
	startDaemon(t, daemonBin, config)
	var back []api.Port
	vmctlJSON(t, vmctlBin, sock, &back, "ports")
	for _, tap := range taps {
		if !slices.ContainsFunc(back, func(p api.Port) bool { return p.Name == tap && p.Network == "e2e" && p.Security }) {
			t.Errorf("%s not plugged in again after a restart: %+v", tap, back)
		}
	}
	ping(t, vms[0], ips[1])
	ping(t, vms[1], "10.91.0.1")
	ping(t, vms[1], "10.91.0.1")

	// Both MACs are learned on their own taps.
	var fdb []api.FDBEntry
	vmctlJSON(t, vmctlBin, sock, &fdb, "fdb", "--network", "e2e")
	at := map[string]string{}
	for _, e := range fdb {
		at[e.MAC] = e.Port
	}
	for i := range macs {
		if at[macs[i]] != taps[i] {
			t.Errorf("%s learned on %q, want %s (fdb %+v)", macs[i], at[macs[i]], taps[i], fdb)
		}
	}
	for _, verb := range []string{"networks", "ports", "stats"} {
		if out := vmctl(t, vmctlBin, sock, verb); !strings.Contains(out, "e2e") {
			t.Errorf("vmctl %s does not mention the network:\n%s", verb, out)
		}
	}

	// A guest killed outright: its tap goes, the daemon drops the port and
	// keeps forwarding for the others.
	if err := vms[1].Kill(); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "the killed guest's port to go", func() bool {
		var ports []api.Port
		vmctlJSON(t, vmctlBin, sock, &ports, "ports")
		for _, p := range ports {
			if p.Name == taps[1] {
				return false
			}
		}
		return true
	})
	ping(t, vms[0], "10.91.0.1")

	// Detach: gone from the guest (QMP) and from the switch.
	vmctl(t, vmctlBin, sock, "detach", vms[0].Name, "--qmp", vms[0].QMPSocket, "--mac", macs[0])
	if devs := qmpDevices(t, vms[0].QMPSocket); len(devs) != 0 {
		t.Errorf("QEMU still has %v after detach", devs)
	}
	var ports []api.Port
	vmctlJSON(t, vmctlBin, sock, &ports, "ports")
	for _, p := range ports {
		if strings.HasPrefix(p.Name, "xs5254") {
			t.Errorf("port %s left after detach", p.Name)
		}
	}
	// Through attach, DHCP, a killed guest and a detach, every frame is
	// where the switch believes it is.
	var st api.Stats
	vmctlJSON(t, vmctlBin, sock, &st, "stats")
	if len(st.Frames) == 0 {
		t.Error("vmctl stats shows no frames")
	}
	for _, f := range st.Frames {
		if f.Error != "" || f.Free+f.Fill+f.Tx+f.Held != f.Total {
			t.Errorf("frames of queue %d: %+v", f.Queue, f)
		}
	}
}
