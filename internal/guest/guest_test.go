package guest

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/digitalocean/go-qemu/qmp"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// cacheDir is the repository's git-ignored build cache.
var cacheDir = filepath.Join("..", "..", "build", "guest")

var (
	imageOnce sync.Once
	testImage Image
	imageErr  error
)

func buildImage(t *testing.T) Image {
	t.Helper()
	imageOnce.Do(func() {
		start := time.Now()
		testImage, imageErr = Build(cacheDir)
		t.Logf("Build: %v", time.Since(start))
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return testImage
}

// boot starts a guest that is closed at the end of the test.
func boot(t *testing.T, opts BootOptions) *VM {
	t.Helper()
	opts.Image = buildImage(t)
	opts.Logf = t.Logf
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	// A boot takes seconds here, but minutes when the two cores are
	// shared with other work; only a guest that never comes up fails.
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	start := time.Now()
	vm, err := Boot(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: booted to XS-READY in %v (pid %d)", vm.Name, time.Since(start).Round(time.Millisecond), vm.PID())
	t.Cleanup(func() {
		if err := vm.Close(); err != nil {
			t.Error(err)
		}
	})
	return vm
}

func run(t *testing.T, vm *VM, cmd string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, st, err := vm.Run(ctx, cmd)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
	}
	return out, st
}

// mustRun runs cmd in the guest and fails the test unless it exits 0.
func mustRun(t *testing.T, vm *VM, cmd string) string {
	t.Helper()
	out, st := run(t, vm, cmd)
	if st != 0 {
		t.Fatalf("guest: %s: exit %d\n%s\nconsole:\n%s", cmd, st, out, vm.Console())
	}
	return out
}

// newTap makes a persistent tap device in the test's namespace, removed at
// test end wherever it ended up.
func newTap(t *testing.T, nss ...*testnet.NS) string {
	t.Helper()
	name := testnet.Name("xstap")
	testnet.Run(t, "ip", "tuntap", "add", "mode", "tap", "name", name)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", name).Run()
		for _, ns := range nss {
			ns.Cmd("ip", "link", "del", name).Run()
		}
	})
	return name
}

// qmpMonitor connects to the guest's QMP socket, bounded in time.
func qmpMonitor(t *testing.T, vm *VM) *qmp.SocketMonitor {
	t.Helper()
	mon, err := qmp.NewSocketMonitor("unix", vm.QMPSocket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- mon.Connect() }()
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		mon.Disconnect()
		err = <-errc
		t.Fatalf("qmp connect timed out: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return mon
}

func qmpRun(t *testing.T, mon *qmp.SocketMonitor, cmd string) {
	t.Helper()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := mon.Run([]byte(cmd))
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("qmp %s: %v", cmd, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("qmp %s: timed out", cmd)
	}
}

func TestBuildCached(t *testing.T) {
	img := buildImage(t)
	st1, err := os.Stat(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	if again != img {
		t.Fatalf("second Build gave %+v, first %+v", again, img)
	}
	st2, err := os.Stat(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	if !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatalf("initramfs %s was rewritten although nothing changed", img.Initrd)
	}

	// The archive holds what /init needs.
	f, err := os.Open(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]*cpio.Header{}
	r := cpio.NewReader(zr)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h
	}
	for name, mode := range map[string]cpio.FileMode{
		"init":              cpio.TypeReg | 0o755,
		"etc/udhcpc.script": cpio.TypeReg | 0o755,
		"bin/busybox":       cpio.TypeReg | 0o755,
		"dev":               cpio.TypeDir | 0o755,
	} {
		h := entries[name]
		if h == nil {
			t.Fatalf("initramfs has no %s", name)
		}
		if h.Mode != mode {
			t.Errorf("%s: mode %o, want %o", name, h.Mode, mode)
		}
	}
	for _, applet := range []string{"bin/sh", "sbin/udhcpc", "bin/ping", "sbin/insmod"} {
		h := entries[applet]
		if h == nil || h.Mode&cpio.ModeType != cpio.TypeSymlink || h.Linkname != "/bin/busybox" {
			t.Errorf("initramfs: %s is not a symlink to /bin/busybox: %+v", applet, h)
		}
	}
	order, err := os.ReadFile(filepath.Join(cacheDir, "kernel", "modules", "load-order"))
	if err != nil {
		t.Fatal(err)
	}
	mods := strings.Fields(string(order))
	idx := func(m string) int {
		for i, x := range mods {
			if x == m {
				return i
			}
		}
		t.Fatalf("module %s missing from load order %v", m, mods)
		return -1
	}
	if !(idx("failover") < idx("net_failover") && idx("net_failover") < idx("virtio_net") &&
		idx("virtio") < idx("virtio_pci") && idx("virtio_ring") < idx("virtio_net")) {
		t.Errorf("load order %v puts a module before its dependencies", mods)
	}
	for _, m := range mods {
		if entries["lib/modules/xs/"+m+".ko"] == nil {
			t.Errorf("initramfs lacks module %s", m)
		}
	}
}

// TestRunAndKill checks the serial command channel and Kill.
func TestRunAndKill(t *testing.T) {
	testnet.RequireRoot(t)
	t.Parallel()
	vm := boot(t, BootOptions{Name: "runkill", MemoryMB: 192})

	out, st := run(t, vm, `echo hello; echo oops >&2; exit 7`)
	if out != "hello\noops\n" || st != 7 {
		t.Fatalf("got %q exit %d, want \"hello\\noops\\n\" exit 7", out, st)
	}
	out, st = run(t, vm, `printf 'no newline'`)
	if out != "no newline\n" || st != 0 {
		t.Fatalf("got %q exit %d", out, st)
	}
	out, st = run(t, vm, `true`)
	if out != "" || st != 0 {
		t.Fatalf("true: got %q exit %d", out, st)
	}
	// Quoting and special characters reach sh untouched.
	out = mustRun(t, vm, `x='a b'; echo "$x|\$HOME|"'"q"'"|tab	end" | sed 's/b/B/'`)
	if out != "a B|$HOME|\"q\"|tab\tend\n" {
		t.Fatalf("quoting: got %q", out)
	}
	// Lines that look like protocol messages stay output.
	out = mustRun(t, vm, `echo "XS-DONE 999 5"; echo`)
	if out != "XS-DONE 999 5\n\n" {
		t.Fatalf("protocol look-alike: got %q", out)
	}
	// Commands run concurrently: a slow one does not hold up a fast one.
	slow := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, st, err := vm.Run(ctx, "sleep 2; echo slow")
		if err == nil && (out != "slow\n" || st != 0) {
			err = fmt.Errorf("slow: got %q exit %d", out, st)
		}
		slow <- err
	}()
	if out := mustRun(t, vm, "echo fast"); out != "fast\n" {
		t.Fatalf("fast: got %q", out)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow command finished before the fast one (%v)", err)
	default:
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	// Back-to-back and concurrent commands all arrive: none is lost to a
	// line read half-way when another command ends.
	for i := range 30 {
		want := fmt.Sprintf("%d %s\n", i, strings.Repeat("x", 60))
		if out := mustRun(t, vm, "echo "+strings.TrimSpace(want)); out != want {
			t.Fatalf("echo %d: got %q", i, out)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				out, st, err := vm.Run(ctx, fmt.Sprintf("echo %d-%d; sleep 0.1; echo done; exit %d", g, i, i))
				cancel()
				if err == nil && (out != fmt.Sprintf("%d-%d\ndone\n", g, i) || st != i) {
					err = fmt.Errorf("concurrent %d-%d: got %q exit %d", g, i, out, st)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if out := mustRun(t, vm, "seq 1 3000 | wc -l"); strings.TrimSpace(out) != "3000" {
		t.Fatalf("seq: got %q", out)
	}
	if out := mustRun(t, vm, "seq 1 2000"); strings.Count(out, "\n") != 2000 || !strings.HasSuffix(out, "\n1999\n2000\n") {
		t.Fatalf("long output: got %d lines", strings.Count(out, "\n"))
	}
	// An expired context ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _, err := vm.Run(ctx, "sleep 5")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run past its deadline: %v", err)
	}
	if _, _, err := vm.Run(context.Background(), "echo a\necho b"); err == nil {
		t.Fatal("Run accepted a command of two lines")
	}
	// No NIC, no lease: WaitLease gives up with the context.
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, _, _, err = vm.WaitLease(ctx, "eth0")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLease without a NIC: %v", err)
	}

	pid := vm.PID()
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-vm.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("qemu still runs 10s after Kill")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("qemu pid %d after Kill: %v", pid, err)
	}
	if _, _, err := vm.Run(context.Background(), "true"); err == nil {
		t.Fatal("Run on a killed guest succeeded")
	}
	if err := vm.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vm.QMPSocket); !os.IsNotExist(err) {
		t.Fatalf("QMP socket left behind: %v", err)
	}
}

// TestNetwork boots a guest with a virtio-net NIC on a tap, moved into a
// test namespace after QEMU opened it, serves it DHCP from busybox udhcpd,
// pings both ways, then hot-plugs a second NIC over QMP.
func TestNetwork(t *testing.T) {
	testnet.RequireRoot(t)
	t.Parallel()
	start := time.Now()
	ns0 := testnet.NewNS(t)
	ns1 := testnet.NewNS(t)
	tap0 := newTap(t, ns0)
	tap1 := newTap(t, ns1)
	const mac0, mac1 = "52:54:00:78:00:02", "52:54:00:78:01:02"

	vm := boot(t, BootOptions{
		Name: "net",
		ExtraArgs: []string{
			"-netdev", "tap,id=n0,ifname=" + tap0 + ",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=n0,mac=" + mac0 + ",romfile=",
		},
	})

	// The tap moves into the namespace while QEMU holds it open.
	testnet.Run(t, "ip", "link", "set", tap0, "netns", ns0.Name)
	ns0.Run(t, "ip", "addr", "add", "10.78.0.1/24", "dev", tap0)
	ns0.Run(t, "ip", "link", "set", tap0, "up")

	dir := t.TempDir()
	conf := filepath.Join(dir, "udhcpd.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`start 10.78.0.100
end 10.78.0.110
interface %s
lease_file %s/leases
pidfile %s/udhcpd.pid
option subnet 255.255.255.0
option router 10.78.0.1
option lease 600
`, tap0, dir, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leases"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dhcpd := ns0.Cmd("busybox", "udhcpd", "-f", conf)
	var dhcpdOut strings.Builder
	dhcpd.Stdout, dhcpd.Stderr = &dhcpdOut, &dhcpdOut
	if err := dhcpd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dhcpd.Process.Kill()
		dhcpd.Wait()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if mac, err := vm.WaitNIC(ctx, "eth0"); err != nil || mac != mac0 {
		t.Fatalf("eth0: mac %q, %v", mac, err)
	}
	ip, router, mac, err := vm.WaitLease(ctx, "eth0")
	if err != nil {
		t.Fatalf("%v\nudhcpd:\n%s\nconsole:\n%s", err, dhcpdOut.String(), vm.Console())
	}
	t.Logf("lease on eth0: %s router %s mac %s (%v after start)", ip, router, mac, time.Since(start).Round(time.Millisecond))
	addr := net.ParseIP(ip).To4()
	if addr == nil || addr[0] != 10 || addr[1] != 78 || addr[2] != 0 || addr[3] < 100 || addr[3] > 110 {
		t.Fatalf("leased address %q is not from the pool", ip)
	}
	if router != "10.78.0.1" || mac != mac0 {
		t.Fatalf("lease: router %q mac %q, want 10.78.0.1 %s", router, mac, mac0)
	}
	if out := mustRun(t, vm, "ip -4 addr show dev eth0"); !strings.Contains(out, "inet "+ip+"/24") {
		t.Fatalf("eth0 lacks the leased address:\n%s", out)
	}
	if out := mustRun(t, vm, "ip route show default"); !strings.Contains(out, "via 10.78.0.1 dev eth0") {
		t.Fatalf("no default route via the router:\n%s", out)
	}
	out := mustRun(t, vm, "ping -c 3 -i 0.2 -W 2 10.78.0.1")
	if !strings.Contains(out, "3 packets received") {
		t.Fatalf("ping from the guest:\n%s", out)
	}
	ns0.Run(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", ip)
	// A failing command reports its status.
	if out, st := run(t, vm, "ping -c 1 -W 1 10.78.0.99"); st != 1 || !strings.Contains(out, "0 packets received") {
		t.Fatalf("ping to nobody: exit %d\n%s", st, out)
	}

	// Hot-plug a second NIC over QMP once the guest is up.
	mon := qmpMonitor(t, vm)
	qmpRun(t, mon, `{"execute":"netdev_add","arguments":{"type":"tap","id":"n1","ifname":"`+tap1+`","script":"no","downscript":"no"}}`)
	qmpRun(t, mon, `{"execute":"device_add","arguments":{"driver":"virtio-net-pci","id":"nic1","netdev":"n1","mac":"`+mac1+`","romfile":""}}`)
	if err := mon.Disconnect(); err != nil {
		t.Fatal(err)
	}
	plugged := time.Now()
	if got, err := vm.WaitNIC(ctx, "eth1"); err != nil || got != mac1 {
		t.Fatalf("hot-plugged eth1: mac %q, %v\nconsole:\n%s", got, err, vm.Console())
	}
	t.Logf("hot-plugged eth1 up in the guest %v after device_add", time.Since(plugged).Round(time.Millisecond))
	if out := mustRun(t, vm, "cat /sys/class/net/eth1/address"); strings.TrimSpace(out) != mac1 {
		t.Fatalf("eth1 address %q, want %s", out, mac1)
	}
	flags, err := strconv.ParseUint(strings.TrimSpace(mustRun(t, vm, "cat /sys/class/net/eth1/flags")), 0, 32)
	if err != nil || flags&syscall.IFF_UP == 0 {
		t.Fatalf("eth1 is not up: flags %#x %v", flags, err)
	}
	if out := mustRun(t, vm, "ps"); !strings.Contains(out, "udhcpc -i eth1") {
		t.Fatalf("no DHCP client on eth1:\n%s", out)
	}
	// The new NIC carries traffic, and a hand-made address survives its
	// DHCP client.
	testnet.Run(t, "ip", "link", "set", tap1, "netns", ns1.Name)
	ns1.Run(t, "ip", "addr", "add", "10.78.1.1/24", "dev", tap1)
	ns1.Run(t, "ip", "link", "set", tap1, "up")
	mustRun(t, vm, "ip addr add 10.78.1.2/24 dev eth1")
	out = mustRun(t, vm, "ping -c 2 -i 0.2 -W 2 10.78.1.1")
	if !strings.Contains(out, "2 packets received") {
		t.Fatalf("ping over the hot-plugged NIC:\n%s", out)
	}

	// Close quits QEMU over QMP: a clean exit, no socket left.
	pid := vm.PID()
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if vm.waitErr != nil {
		t.Fatalf("qemu did not exit cleanly: %v\nconsole:\n%s", vm.waitErr, vm.Console())
	}
	if strings.Contains(vm.Console(), "terminating on signal") {
		t.Fatalf("Close needed a signal, not QMP quit:\n%s", vm.Console())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("qemu pid %d after Close: %v", pid, err)
	}
	if _, err := os.Stat(vm.QMPSocket); !os.IsNotExist(err) {
		t.Fatalf("QMP socket left behind: %v", err)
	}
	t.Logf("TestNetwork took %v", time.Since(start).Round(time.Millisecond))
}

// TestBootFailure checks that a QEMU that cannot start is reported with
// its own message, promptly, and leaves nothing behind.
func TestBootFailure(t *testing.T) {
	img := buildImage(t)
	img.Initrd = filepath.Join(t.TempDir(), "missing.cpio.gz")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := Boot(ctx, BootOptions{Image: img, Name: "broken", Dir: dir})
	if err == nil {
		vm.Close()
		t.Fatal("Boot with a missing initrd succeeded")
	}
	if !strings.Contains(err.Error(), "qemu exited") || !strings.Contains(err.Error(), "missing.cpio.gz") {
		t.Fatalf("Boot error does not say why: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("Boot left files behind: %v", left)
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	if _, err := Boot(ctx, BootOptions{Image: img, Dir: long}); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("Boot with an overlong socket path: %v", err)
	}
	if _, err := os.Stat(long); !os.IsNotExist(err) {
		t.Fatalf("Boot made %s although it refused it: %v", long, err)
	}
}
