package vmctl

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/internal/guest"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

// bootGuest boots the project's test guest (internal/guest), closed at the
// end of the test.
func bootGuest(t *testing.T) *guest.VM {
	t.Helper()
	img, err := guest.Build(filepath.Join("..", "build", "guest"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "xsvm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	vm, err := guest.Boot(ctx, guest.BootOptions{Image: img, Name: "vm1", Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest booted in %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { vm.Close() })
	return vm
}

// guestRun runs cmd in the guest and returns its output; it fails the test
// unless cmd exits 0.
func guestRun(t *testing.T, vm *guest.VM, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, st, err := vm.Run(ctx, cmd)
	if err != nil || st != 0 {
		t.Fatalf("guest: %s: exit %d, %v\n%s", cmd, st, err, out)
	}
	return out
}

// guestNICs returns the guest's NICs by MAC address.
func guestNICs(t *testing.T, vm *guest.VM) map[string]string {
	t.Helper()
	out := guestRun(t, vm, `for d in /sys/class/net/eth*; do [ -e "$d" ] && echo "${d##*/} $(cat "$d/address")"; done; true`)
	nics := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			nics[f[1]] = f[0]
		}
	}
	return nics
}

// waitGuestNIC waits until the guest has a NIC with address mac, or has
// none when present is false, and returns its name.
func waitGuestNIC(t *testing.T, vm *guest.VM, mac net.HardwareAddr, present bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		name, ok := guestNICs(t, vm)[mac.String()]
		if ok == present {
			return name
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest's NIC %s: present %v after 30s, want %v\nconsole:\n%s", mac, ok, present, vm.Console())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// withQMP runs fn on a QMP connection to the guest's QEMU, closed before
// it returns (QEMU takes one client at a time).
func withQMP(t *testing.T, vm *guest.VM, fn func(ctx context.Context, m *monitor)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := dialQMP(ctx, vm.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	fn(ctx, m)
}

// qemuNICs returns what QEMU has of vmctl's NICs: their QMP device ids
// (qom-list), the PCI Ethernet controllers on the bus (query-pci) and the
// netdevs (HMP info network; QEMU 7.2 has no QMP command that lists them).
func qemuNICs(t *testing.T, vm *guest.VM) (ids, pci, netdevs []string) {
	t.Helper()
	withQMP(t, vm, func(ctx context.Context, m *monitor) {
		var info string
		if err := m.run(ctx, "human-monitor-command", map[string]any{"command-line": "info network"}, nil, &info); err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(info) {
			if strings.HasPrefix(f, NetdevPrefix) {
				netdevs = append(netdevs, strings.TrimSuffix(f, ":"))
			}
		}
		ps, err := m.peripherals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if strings.HasPrefix(p.Name, DevicePrefix) {
				ids = append(ids, p.Name)
			}
		}
		var buses []struct {
			Devices []struct {
				QdevID    string `json:"qdev_id"`
				ClassInfo struct {
					Class int `json:"class"`
				} `json:"class_info"`
			} `json:"devices"`
		}
		if err := m.run(ctx, "query-pci", nil, nil, &buses); err != nil {
			t.Fatal(err)
		}
		for _, b := range buses {
			for _, d := range b.Devices {
				if d.ClassInfo.Class == 0x0200 {
					pci = append(pci, d.QdevID)
				}
			}
		}
	})
	return ids, pci, netdevs
}

// noNICsLeft fails the test when QEMU, the host or the switch has
// anything left of a NIC.
func noNICsLeft(t *testing.T, vm *guest.VM, a *vmctltest.API) {
	t.Helper()
	if ids, pci, nds := qemuNICs(t, vm); len(ids)+len(pci)+len(nds) != 0 {
		t.Errorf("QEMU still has NICs: devices %v, PCI Ethernet controllers %v, netdevs %v", ids, pci, nds)
	}
	if l := xsLinks(t); len(l) != 0 {
		t.Errorf("devices left in the host: %v", l)
	}
	if p := a.Ports(); len(p) != 0 {
		t.Errorf("ports left in the switch: %v", p)
	}
}

// qemuTapFDs counts the guest's QEMU's open descriptors of tap.
func qemuTapFDs(t *testing.T, vm *guest.VM, tap string) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", vm.PID())
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && strings.Contains(string(b), "iff:\t"+tap+"\n") {
			n++
		}
	}
	return n
}

// TestGuest attaches NICs to a real QEMU guest and detaches them, and
// makes attaches fail against it, with a fake daemon API in front.
func TestGuest(t *testing.T) {
	// Built before entering the test's namespace: the first build
	// downloads Debian's kernel package, which a fresh namespace cannot
	// reach.
	if _, err := guest.Build(filepath.Join("..", "build", "guest")); err != nil {
		t.Fatal(err)
	}
	if !testnet.InNamespace(t) {
		return
	}
	start := time.Now()
	vm := bootGuest(t)
	a := lanAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("attach and detach", func(t *testing.T) {
		mac, _ := net.ParseMAC("52:54:00:5e:00:01")
		t0 := time.Now()
		att, err := Attach(ctx, AttachOptions{VM: vm.Name, QMPSocket: vm.QMPSocket, Network: "lan", MAC: mac, API: a.Client(), WaitGuest: 30 * time.Second, Logf: t.Logf})
		if err != nil {
			t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
		}
		t.Logf("Attach took %v", time.Since(t0).Round(time.Millisecond))
		if !att.GuestReady || att.Tap != "xs5254005e0001" || att.Port.Name != att.Tap {
			t.Fatalf("Attach returned %+v", att)
		}
		// The guest's first hot-plugged NIC is eth0.
		if got, err := vm.WaitNIC(ctx, "eth0"); err != nil || got != mac.String() {
			t.Fatalf("guest eth0: MAC %q, %v", got, err)
		}
		if out := guestRun(t, vm, "cat /sys/class/net/eth0/address"); strings.TrimSpace(out) != mac.String() {
			t.Fatalf("guest eth0 address %q, want %s", out, mac)
		}
		// The features the guest's driver negotiated, one bit a
		// character: no checksum offload (0 CSUM, 1 GUEST_CSUM), no
		// segmentation (7-10 GUEST_TSO4/TSO6/ECN/UFO, 11-14 HOST_*).
		feat := strings.TrimSpace(guestRun(t, vm, "cat /sys/class/net/eth0/device/features"))
		for _, bit := range []int{0, 1, 7, 8, 9, 10, 11, 12, 13, 14} {
			if bit >= len(feat) || feat[bit] != '0' {
				t.Errorf("the guest negotiated offload feature bit %d: %s", bit, feat)
			}
		}
		if len(feat) < 6 || feat[5] != '1' {
			t.Errorf("the guest did not get the MAC feature (bit 5): %s", feat)
		}
		withQMP(t, vm, func(ctx context.Context, m *monitor) {
			for _, p := range offloads {
				var on bool
				if err := m.qomGet(ctx, "/machine/peripheral/"+att.Device, p, &on); err != nil {
					t.Fatal(err)
				}
				if on {
					t.Errorf("device %s: %s is on", att.Device, p)
				}
			}
		})
		link, err := netlink.LinkByName(att.Tap)
		if err != nil {
			t.Fatalf("tap %s: %v", att.Tap, err)
		}
		if tun, ok := link.(*netlink.Tuntap); !ok || tun.Mode != netlink.TUNTAP_MODE_TAP || tun.Flags&netlink.TUNTAP_VNET_HDR == 0 {
			t.Fatalf("%s is not a tap with a virtio-net header: %#v", att.Tap, link)
		}
		if n := openTunFDs(t); n != 0 {
			t.Errorf("vmctl holds %d /dev/net/tun descriptors; only QEMU should", n)
		}
		if c := a.Calls(); !slices.Equal(c, []string{"add xs5254005e0001 lan"}) {
			t.Fatalf("API calls %q", c)
		}
		if ids, pci, nds := qemuNICs(t, vm); !slices.Equal(ids, []string{att.Device}) || !slices.Equal(pci, []string{att.Device}) || !slices.Equal(nds, []string{att.Netdev}) {
			t.Fatalf("QEMU has devices %v, PCI Ethernet controllers %v, netdevs %v", ids, pci, nds)
		}

		t0 = time.Now()
		det, err := Detach(ctx, DetachOptions{VM: vm.Name, QMPSocket: vm.QMPSocket, MAC: mac, API: a.Client(), Timeout: 30 * time.Second, Logf: t.Logf})
		if err != nil {
			t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
		}
		t.Logf("Detach took %v", time.Since(t0).Round(time.Millisecond))
		if det.Tap != att.Tap || det.Device != att.Device {
			t.Fatalf("Detach returned %+v", det)
		}
		waitGuestNIC(t, vm, mac, false)
		if c := a.Calls(); !slices.Equal(c, []string{"add xs5254005e0001 lan", "remove xs5254005e0001"}) {
			t.Fatalf("API calls %q", c)
		}
		noNICsLeft(t, vm, a)
	})

	t.Run("two NICs, two queues", func(t *testing.T) {
		var atts []Attachment
		for range 2 {
			att, err := Attach(ctx, AttachOptions{VM: vm.Name, QMPSocket: vm.QMPSocket, Network: "lan", Queues: 2, API: a.Client(), WaitGuest: 30 * time.Second})
			if err != nil {
				t.Fatalf("%v\nconsole:\n%s", err, vm.Console())
			}
			atts = append(atts, att)
			name := waitGuestNIC(t, vm, att.MAC, true)
			// Bit 22 is VIRTIO_NET_F_MQ.
			if feat := guestRun(t, vm, "cat /sys/class/net/"+name+"/device/features"); len(feat) < 23 || feat[22] != '1' {
				t.Errorf("the guest's %s did not negotiate multi-queue: %s", name, feat)
			}
			// QEMU holds both of the tap's queues (the guest, with one
			// CPU, has it use one).
			if n := qemuTapFDs(t, vm, att.Tap); n != 2 {
				t.Errorf("QEMU holds %d descriptors of tap %s, want 2", n, att.Tap)
			}
		}
		slices.SortFunc(atts, func(a, b Attachment) int { return strings.Compare(a.Device, b.Device) })
		nics, err := List(ctx, vm.QMPSocket)
		if err != nil {
			t.Fatal(err)
		}
		if len(nics) != 2 || nics[0].MAC.String() != atts[0].MAC.String() || nics[1].MAC.String() != atts[1].MAC.String() || nics[0].Queues != 2 || nics[0].Netdev != atts[0].Netdev {
			t.Fatalf("List: %+v", nics)
		}
		_, err = Detach(ctx, DetachOptions{QMPSocket: vm.QMPSocket, API: a.Client()})
		wantErr(t, err, "2 NICs attached by vmctl", atts[0].MAC.String(), atts[1].MAC.String())
		if _, err := Detach(ctx, DetachOptions{QMPSocket: vm.QMPSocket, MAC: atts[0].MAC, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		// The only one left needs no MAC.
		det, err := Detach(ctx, DetachOptions{QMPSocket: vm.QMPSocket, API: a.Client()})
		if err != nil {
			t.Fatal(err)
		}
		if det.MAC.String() != atts[1].MAC.String() {
			t.Fatalf("Detach took %s, want %s", det.MAC, atts[1].MAC)
		}
		for _, att := range atts {
			waitGuestNIC(t, vm, att.MAC, false)
		}
		noNICsLeft(t, vm, a)
	})

	t.Run("unknown network", func(t *testing.T) {
		mac, _ := net.ParseMAC("52:54:00:5e:00:02")
		_, err := Attach(ctx, AttachOptions{VM: vm.Name, QMPSocket: vm.QMPSocket, Network: "nope", MAC: mac, API: a.Client(), WaitGuest: 30 * time.Second})
		wantErr(t, err, `attach NIC 52:54:00:5e:00:02 to vm1: add port xs5254005e0002 to network nope: port xs5254005e0002: no network "nope"`)
		noNICsLeft(t, vm, a)
	})

	t.Run("no QMP socket", func(t *testing.T) {
		missing := filepath.Join(filepath.Dir(vm.QMPSocket), "vm2.qmp")
		_, err := Attach(ctx, AttachOptions{QMPSocket: missing, Network: "lan", API: a.Client()})
		wantErr(t, err, "attach a NIC to vm2: QMP connect on "+missing+": no such socket")
		noNICsLeft(t, vm, a)
	})

	// From here on the guest has no virtio-net driver: it never takes a
	// NIC, as when a hot-plug reaches a guest still booting.
	guestRun(t, vm, "rmmod virtio_net")

	t.Run("guest does not take the NIC", func(t *testing.T) {
		t0 := time.Now()
		_, err := Attach(ctx, AttachOptions{VM: vm.Name, QMPSocket: vm.QMPSocket, Network: "lan", API: a.Client(), WaitGuest: 2 * time.Second, Logf: t.Logf})
		t.Logf("Attach failed after %v: %v", time.Since(t0).Round(time.Millisecond), err)
		wantErr(t, err, "the guest did not take the NIC within 2s")
		if strings.Contains(err.Error(), "undoing it") {
			t.Errorf("the attach was not undone cleanly: %v", err)
		}
		noNICsLeft(t, vm, a)
	})

	t.Run("guest killed during attach", func(t *testing.T) {
		var once sync.Once
		logf := func(format string, args ...any) {
			t.Logf(format, args...)
			if strings.HasPrefix(format, "%s: waiting") {
				once.Do(func() {
					if err := vm.Kill(); err != nil {
						t.Error(err)
					}
				})
			}
		}
		calls := len(a.Calls())
		_, err := Attach(ctx, AttachOptions{VM: vm.Name, QMPSocket: vm.QMPSocket, Network: "lan", API: a.Client(), WaitGuest: time.Minute, Logf: logf})
		wantErr(t, err, "waiting for the guest to take the NIC: QMP x-query-virtio-status on "+vm.QMPSocket+": QEMU closed the connection (has the VM exited?)")
		if strings.Contains(err.Error(), "undoing it") {
			t.Errorf("the attach was not undone cleanly: %v", err)
		}
		select {
		case <-vm.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("QEMU still runs 10s after it was killed")
		}
		if l := xsLinks(t); len(l) != 0 {
			t.Errorf("devices left in the host: %v", l)
		}
		if p := a.Ports(); len(p) != 0 {
			t.Errorf("ports left in the switch: %v", p)
		}
		if c := a.Calls()[calls:]; len(c) != 2 || !strings.HasPrefix(c[0], "add ") || !strings.HasPrefix(c[1], "remove ") {
			t.Errorf("API calls %q, want an add and a remove", c)
		}
	})
	t.Logf("TestGuest took %v", time.Since(start).Round(time.Millisecond))
}
