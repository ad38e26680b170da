package vmctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

// These tests run Attach and Detach against a fake QEMU (package
// vmctltest), which fails, hangs or dies on the command a test names, to
// check every way back; guest_test.go runs them against a real one.

func lanAPI(t *testing.T) *vmctltest.API {
	return vmctltest.NewAPI(t, vmctltest.State{Networks: []api.Network{{Name: "lan"}}})
}

// xsLinks returns the devices of the test's namespace that vmctl could
// have made.
func xsLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ifi := range ifs {
		if strings.HasPrefix(ifi.Name, TapPrefix) {
			out = append(out, ifi.Name)
		}
	}
	return out
}

// nothingLeft fails the test when a tap, a QEMU device, netdev or named fd
// or a switch port is left.
func nothingLeft(t *testing.T, q *vmctltest.QMP, a *vmctltest.API) {
	t.Helper()
	if l := xsLinks(t); len(l) != 0 {
		t.Errorf("devices left in the host: %v", l)
	}
	if q != nil {
		if d, n, f := q.Devices(), q.Netdevs(), q.FDs(); len(d)+len(n)+len(f) != 0 {
			t.Errorf("left in QEMU: devices %v, netdevs %v, fds %v", d, n, f)
		}
	}
	if p := a.Ports(); len(p) != 0 {
		t.Errorf("ports left in the switch: %v", p)
	}
}

// changes returns the commands that change QEMU, in order.
func changes(q *vmctltest.QMP) []string {
	var out []string
	for _, c := range q.Commands() {
		switch strings.Fields(c)[0] {
		case "qmp_capabilities", "qom-list", "qom-get", "x-query-virtio-status", "query-pci":
		default:
			out = append(out, c)
		}
	}
	return out
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q spans several lines", err)
	}
}

func TestFakeAttachDetach(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mac, _ := net.ParseMAC("52:54:00:12:34:56")

	t.Run("one queue", func(t *testing.T) {
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		var logs []string
		att, err := Attach(ctx, AttachOptions{VM: "vm1", QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client(),
			WaitGuest: 5 * time.Second, Logf: func(f string, args ...any) { logs = append(logs, f) }})
		if err != nil {
			t.Fatal(err)
		}
		if att.Tap != "xs525400123456" || att.Device != "xs-525400123456" || att.Netdev != "xsnd-525400123456" ||
			att.MAC.String() != mac.String() || att.Network != "lan" || att.Queues != 1 || !att.GuestReady ||
			att.Port.Name != att.Tap || att.VM != "vm1" {
			t.Fatalf("Attach returned %+v", att)
		}
		if len(logs) == 0 {
			t.Error("Logf was never called")
		}
		want := []string{"getfd xsnd-525400123456-fd0", "netdev_add xsnd-525400123456", "device_add xs-525400123456"}
		if got := changes(q); !slices.Equal(got, want) {
			t.Fatalf("QMP commands %q, want %q", got, want)
		}
		if got := a.Calls(); !slices.Equal(got, []string{"add xs525400123456 lan"}) {
			t.Fatalf("API calls %q", got)
		}
		dev := q.Device(att.Device)
		for _, p := range offloads {
			if dev[p] != false {
				t.Errorf("device_add %s=%v, want false", p, dev[p])
			}
		}
		if dev["mac"] != mac.String() || dev["netdev"] != att.Netdev || dev["romfile"] != "" || dev["mq"] != nil {
			t.Errorf("device_add arguments %v", dev)
		}
		// QEMU holds the tap; vmctl let go of its own descriptors.
		link, err := netlink.LinkByName(att.Tap)
		if err != nil {
			t.Fatalf("tap %s after Attach: %v", att.Tap, err)
		}
		tun, ok := link.(*netlink.Tuntap)
		if !ok || tun.Mode != netlink.TUNTAP_MODE_TAP || tun.Flags&netlink.TUNTAP_VNET_HDR == 0 || tun.Flags&netlink.TUNTAP_NO_PI == 0 {
			t.Fatalf("%s is not a tap with a virtio-net header: %#v", att.Tap, link)
		}
		if n, held := openTunFDs(t), q.Held(); n != held || held != 1 {
			t.Errorf("%d /dev/net/tun descriptors open, the fake QEMU holds %d: vmctl kept some", n, held)
		}

		nics, err := List(ctx, q.Socket)
		if err != nil || len(nics) != 1 || nics[0].Device != att.Device || nics[0].MAC.String() != mac.String() || nics[0].Queues != 1 || nics[0].Tap != att.Tap {
			t.Fatalf("List: %+v, %v", nics, err)
		}

		// Again with the same MAC: refused before anything is made.
		_, err = Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client()})
		wantErr(t, err, "already has a NIC with MAC 52:54:00:12:34:56")
		if got := changes(q); len(got) != 3 {
			t.Fatalf("a refused attach changed QEMU: %q", got)
		}

		det, err := Detach(ctx, DetachOptions{VM: "vm1", QMPSocket: q.Socket, API: a.Client(), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if det.Device != att.Device || det.MAC.String() != mac.String() {
			t.Fatalf("Detach returned %+v", det)
		}
		want = append(want, "device_del xs-525400123456", "netdev_del xsnd-525400123456")
		if got := changes(q); !slices.Equal(got, want) {
			t.Fatalf("QMP commands %q, want %q", got, want)
		}
		if got := a.Calls(); !slices.Equal(got, []string{"add xs525400123456 lan", "remove xs525400123456"}) {
			t.Fatalf("API calls %q", got)
		}
		nothingLeft(t, q, a)

		// Nothing left to detach.
		_, err = Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: mac, API: a.Client()})
		wantErr(t, err, "no NIC with MAC 52:54:00:12:34:56")
		_, err = Detach(ctx, DetachOptions{QMPSocket: q.Socket, API: a.Client()})
		wantErr(t, err, "no NIC attached by vmctl")
	})

	t.Run("queues and random MACs", func(t *testing.T) {
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		var atts []Attachment
		for range 2 {
			att, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", Queues: 3, API: a.Client()})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(att.MAC.String(), "52:54:00:") || att.GuestReady || att.Queues != 3 {
				t.Fatalf("Attach returned %+v", att)
			}
			_, _, nd := Names(att.MAC)
			dev := q.Device(att.Device)
			if dev["mq"] != true || dev["vectors"] != 8.0 {
				t.Fatalf("device_add of 3 queues: %v", dev)
			}
			link, err := netlink.LinkByName(att.Tap)
			if err != nil {
				t.Fatal(err)
			}
			if tun := link.(*netlink.Tuntap); tun.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 {
				t.Errorf("%s is not multi-queue: %#v", att.Tap, tun)
			}
			wantFDs := []string{"getfd " + nd + "-fd0", "getfd " + nd + "-fd1", "getfd " + nd + "-fd2"}
			if got := changes(q); !slices.Equal(got[len(got)-5:len(got)-2], wantFDs) {
				t.Fatalf("QMP commands %q, want %q", got, wantFDs)
			}
			atts = append(atts, att)
		}
		// List orders by MAC.
		slices.SortFunc(atts, func(a, b Attachment) int { return strings.Compare(a.Device, b.Device) })
		nics, err := List(ctx, q.Socket)
		if err != nil || len(nics) != 2 || nics[0].Queues != 3 || nics[0].MAC.String() != atts[0].MAC.String() || nics[1].MAC.String() != atts[1].MAC.String() {
			t.Fatalf("List: %+v, %v", nics, err)
		}
		_, err = Detach(ctx, DetachOptions{QMPSocket: q.Socket, API: a.Client()})
		wantErr(t, err, "2 NICs attached by vmctl", atts[0].MAC.String(), atts[1].MAC.String())
		for _, att := range atts {
			if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: att.MAC, API: a.Client()}); err != nil {
				t.Fatal(err)
			}
		}
		nothingLeft(t, q, a)
	})

	t.Run("q35", func(t *testing.T) {
		// The root bus takes no hot-plugged device: each NIC goes on an
		// empty root port, and with none left attach says what to do.
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		q.SetRootPorts("rp1", "rp2")
		var buses []string
		var macs []net.HardwareAddr
		for i := range 3 {
			m := net.HardwareAddr{0x52, 0x54, 0, 0x35, 0, byte(i)}
			macs = append(macs, m)
			att, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: m, API: a.Client()})
			if i == 2 {
				wantErr(t, err, "device_add", "does not support hotplugging", "no empty PCIe root port", "pcie-root-port", "--bus")
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			buses = append(buses, fmt.Sprint(q.Device(att.Device)["bus"], ".", q.Device(att.Device)["addr"]))
		}
		if !slices.Equal(buses, []string{"rp1.0", "rp2.0"}) {
			t.Errorf("NICs on buses and slots %q, want rp1 and rp2, slot 0", buses)
		}
		if len(q.Devices()) != 2 || len(q.Netdevs()) != 2 || len(a.Ports()) != 2 {
			t.Errorf("the failed attach left devices %q, netdevs %q, ports %v", q.Devices(), q.Netdevs(), a.Ports())
		}
		// A root port that query-pci shows empty although it holds a NIC
		// (its bus not numbered yet) refuses, and the next one is tried.
		if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: macs[1], API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		q.SetUnnumbered("rp1")
		att, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: macs[1], API: a.Client()})
		if err != nil {
			t.Fatal(err)
		}
		if bus := q.Device(att.Device)["bus"]; bus != "rp2" {
			t.Errorf("NIC on bus %v, want rp2, past rp1 that looked empty", bus)
		}
		_, err = Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: macs[2], API: a.Client()})
		wantErr(t, err, "not available", "no PCIe root port took the NIC")
		// A bus named by the caller is taken as it is.
		_, err = Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client(), Bus: "rp9"})
		wantErr(t, err, "device_add", "Bus 'rp9' not found")
		for _, m := range macs[:2] {
			if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: m, API: a.Client()}); err != nil {
				t.Fatal(err)
			}
		}
		nothingLeft(t, q, a)
	})

	t.Run("MAC of a NIC vmctl did not make", func(t *testing.T) {
		// The VM was started with -nic and QEMU's default MAC; vmctl
		// refuses to give it a second NIC with the same one.
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		q.AddBootNIC(mac.String())
		_, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client()})
		wantErr(t, err, "already has a NIC with MAC "+mac.String(), "/machine/unattached/device[1]")
		nothingLeft(t, q, a)
		if _, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", API: a.Client()}); err != nil {
			t.Fatalf("a random MAC: %v", err)
		}
	})

	t.Run("daemon unreachable", func(t *testing.T) {
		// Detach touches nothing while the daemon cannot be asked, and
		// finishes once it can.
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		if _, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		down := api.NewClient(filepath.Join(t.TempDir(), "api.sock"))
		_, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, API: down})
		wantErr(t, err, "left as it is")
		if len(q.Devices()) != 1 || len(q.Netdevs()) != 1 || len(a.Ports()) != 1 {
			t.Fatalf("a detach without the daemon changed devices %q, netdevs %q, ports %v", q.Devices(), q.Netdevs(), a.Ports())
		}
		if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		nothingLeft(t, q, a)
	})

	t.Run("events in between", func(t *testing.T) {
		// Events arrive before answers, also before the answer to
		// qmp_capabilities: none is taken for an answer.
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		q.SetNoisy(true)
		att, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client(), WaitGuest: 5 * time.Second})
		if err != nil || !att.GuestReady {
			t.Fatalf("Attach: %+v, %v", att, err)
		}
		nics, err := List(ctx, q.Socket)
		if err != nil || len(nics) != 1 || nics[0].MAC.String() != mac.String() || nics[0].Netdev != att.Netdev || nics[0].Queues != 1 {
			t.Fatalf("List: %+v, %v", nics, err)
		}
		if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		nothingLeft(t, q, a)
	})

	t.Run("port already gone", func(t *testing.T) {
		// The daemon removed the port when it saw the tap vanish: Detach
		// does not mind. Without an API client it leaves the port alone.
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		att, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client()})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Client().RemovePort(ctx, att.Tap); err != nil {
			t.Fatal(err)
		}
		if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: mac, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		nothingLeft(t, q, a)
		if _, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: mac}); err != nil {
			t.Fatal(err)
		}
		if len(a.Ports()) != 1 {
			t.Fatalf("Detach without an API client touched the ports: %v", a.Ports())
		}
	})

	t.Run("guest does not release", func(t *testing.T) {
		q, a := vmctltest.NewQMP(t), lanAPI(t)
		if _, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", MAC: mac, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		q.SetGuest(true, false)
		start := time.Now()
		_, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: mac, API: a.Client(), Timeout: 300 * time.Millisecond})
		wantErr(t, err, "did not release xs-525400123456 within 300ms")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Detach took %v with a 300ms timeout", d)
		}
		// The NIC keeps working: nothing else was taken away.
		if len(q.Devices()) != 1 || len(q.Netdevs()) != 1 || len(a.Ports()) != 1 || len(xsLinks(t)) != 1 {
			t.Fatalf("a failed detach took things away: devices %v netdevs %v ports %v links %v", q.Devices(), q.Netdevs(), a.Ports(), xsLinks(t))
		}
		q.SetGuest(true, true)
		if _, err := Detach(ctx, DetachOptions{QMPSocket: q.Socket, MAC: mac, API: a.Client()}); err != nil {
			t.Fatal(err)
		}
		nothingLeft(t, q, a)
	})
}

// openTunFDs counts this process's open descriptors of /dev/net/tun (the
// fake QEMU's among them).
func openTunFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "/dev/net/tun" {
			n++
		}
	}
	return n
}

// TestFakeRollback fails each step of an attach in turn and checks that
// what was done is undone, in reverse order, and nothing is left.
func TestFakeRollback(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	defer func(d time.Duration) { releaseTimeout = d }(releaseTimeout)
	releaseTimeout = 500 * time.Millisecond
	const (
		tap = "xs525400000001"
		dev = "xs-525400000001"
		nd  = "xsnd-525400000001"
		fd0 = nd + "-fd0"
		fd1 = nd + "-fd1"
	)
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	for _, tc := range []struct {
		name    string
		setup   func(q *vmctltest.QMP, a *vmctltest.API)
		network string
		queues  int
		wait    time.Duration
		timeout time.Duration // of the caller's context
		errs    []string      // what the error says
		qmp     []string      // QEMU-changing commands, in order
		api     []string
		left    bool // QEMU keeps the tap (the guest never released the NIC)
	}{{
		name:    "unknown network",
		network: "nope",
		errs:    []string{`add port xs525400000001 to network nope: port xs525400000001: no network "nope"`},
		api:     []string{"add " + tap + " nope"},
	}, {
		name: "port exists",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) {
			a.Fail("POST", "/v1/ports", http.StatusConflict, "port xs525400000001 exists")
		},
		errs: []string{"port xs525400000001 exists"},
		// A refused add leaves the existing port alone.
	}, {
		name:  "getfd",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) { q.On("getfd", vmctltest.Action{Fail: "no fds today"}) },
		errs:  []string{"QMP getfd on ", ": no fds today"},
		qmp:   []string{"getfd " + fd0},
		api:   []string{"add " + tap + " lan", "remove " + tap},
	}, {
		name:   "netdev_add",
		queues: 2,
		setup:  func(q *vmctltest.QMP, a *vmctltest.API) { q.On("netdev_add", vmctltest.Action{Fail: "tap: bad fd"}) },
		errs:   []string{"QMP netdev_add on ", ": tap: bad fd"},
		qmp:    []string{"getfd " + fd0, "getfd " + fd1, "netdev_add " + nd, "closefd " + fd1, "closefd " + fd0},
		api:    []string{"add " + tap + " lan", "remove " + tap},
	}, {
		name: "device_add",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) {
			q.On("device_add", vmctltest.Action{Fail: "Bus 'pci.0' does not support hotplugging"})
		},
		errs: []string{"QMP device_add on ", ": Bus 'pci.0' does not support hotplugging"},
		qmp:  []string{"getfd " + fd0, "netdev_add " + nd, "device_add " + dev, "netdev_del " + nd, "closefd " + fd0},
		api:  []string{"add " + tap + " lan", "remove " + tap},
	}, {
		name:  "guest does not take the NIC",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) { q.SetGuest(false, true) },
		wait:  400 * time.Millisecond,
		errs:  []string{"the guest did not take the NIC within 400ms"},
		qmp:   []string{"getfd " + fd0, "netdev_add " + nd, "device_add " + dev, "device_del " + dev, "netdev_del " + nd, "closefd " + fd0},
		api:   []string{"add " + tap + " lan", "remove " + tap},
	}, {
		name:  "guest neither takes nor releases the NIC",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) { q.SetGuest(false, false) },
		wait:  200 * time.Millisecond,
		errs: []string{"the guest did not take the NIC within 200ms",
			"device_del xs-525400000001: the guest did not release xs-525400000001 within 500ms",
			"tap xs525400000001 still exists (QEMU still holds it)"},
		qmp:  []string{"getfd " + fd0, "netdev_add " + nd, "device_add " + dev, "device_del " + dev, "netdev_del " + nd, "closefd " + fd0},
		api:  []string{"add " + tap + " lan", "remove " + tap},
		left: true,
	}, {
		name:    "QEMU does not answer",
		setup:   func(q *vmctltest.QMP, a *vmctltest.API) { q.On("device_add", vmctltest.Action{Hang: true}) },
		timeout: time.Second,
		errs:    []string{"QMP device_add on ", "no answer: context deadline exceeded"},
		// The device was added all the same; a new connection takes it back.
		qmp: []string{"getfd " + fd0, "netdev_add " + nd, "device_add " + dev, "device_del " + dev, "netdev_del " + nd, "closefd " + fd0},
		api: []string{"add " + tap + " lan", "remove " + tap},
	}, {
		name: "QEMU answers late",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) {
			q.On("device_add", vmctltest.Action{Delay: 1500 * time.Millisecond})
		},
		timeout: time.Second,
		errs:    []string{"QMP device_add on ", "no answer: context deadline exceeded"},
		// The late answer to device_add is not taken for device_del's.
		qmp: []string{"getfd " + fd0, "netdev_add " + nd, "device_add " + dev, "device_del " + dev, "netdev_del " + nd, "closefd " + fd0},
		api: []string{"add " + tap + " lan", "remove " + tap},
	}, {
		name:  "QEMU dies at device_add",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) { q.On("device_add", vmctltest.Action{Exit: true}) },
		errs:  []string{"QMP device_add on ", "QEMU closed the connection (has the VM exited?)"},
		qmp:   []string{"getfd " + fd0, "netdev_add " + nd, "device_add " + dev},
		api:   []string{"add " + tap + " lan", "remove " + tap},
	}, {
		name:  "QEMU dies while the guest is awaited",
		setup: func(q *vmctltest.QMP, a *vmctltest.API) { q.On("x-query-virtio-status", vmctltest.Action{Exit: true}) },
		wait:  5 * time.Second,
		errs:  []string{"waiting for the guest to take the NIC: QMP x-query-virtio-status on ", "QEMU closed the connection"},
		qmp:   []string{"getfd " + fd0, "netdev_add " + nd, "device_add " + dev},
		api:   []string{"add " + tap + " lan", "remove " + tap},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			q, a := vmctltest.NewQMP(t), lanAPI(t)
			if tc.setup != nil {
				tc.setup(q, a)
			}
			network := tc.network
			if network == "" {
				network = "lan"
			}
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 30 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			_, err := Attach(ctx, AttachOptions{VM: "vm1", QMPSocket: q.Socket, Network: network, MAC: mac, Queues: tc.queues, API: a.Client(), WaitGuest: tc.wait})
			t.Logf("Attach failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			wantErr(t, err, append([]string{"attach NIC 52:54:00:00:00:01 to vm1: "}, tc.errs...)...)
			if got := changes(q); !slices.Equal(got, tc.qmp) {
				t.Errorf("QMP commands\n%q\nwant\n%q", got, tc.qmp)
			}
			if got := a.Calls(); !slices.Equal(got, tc.api) {
				t.Errorf("API calls %q, want %q", got, tc.api)
			}
			if n, held := openTunFDs(t), q.Held(); n != held {
				t.Errorf("%d /dev/net/tun descriptors open, the fake QEMU holds %d: vmctl kept some", n, held)
			}
			if tc.left {
				// The NIC stays until the guest lets it go; then QEMU
				// closes the tap.
				q.SetGuest(false, true)
				if _, err := Detach(context.Background(), DetachOptions{QMPSocket: q.Socket, MAC: mac, API: a.Client()}); err != nil {
					t.Fatal(err)
				}
			}
			nothingLeft(t, q, a)
		})
	}
}

// TestFakeQMPSocket checks the QMP socket's failures: none there, nothing
// listening, and one held by another client.
func TestFakeQMPSocket(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	a := lanAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	missing := t.TempDir() + "/nope.qmp"
	_, err := Attach(ctx, AttachOptions{QMPSocket: missing, Network: "lan", API: a.Client()})
	wantErr(t, err, "attach a NIC to nope: QMP connect on "+missing+": no such socket")
	var qe *QMPError
	if !errors.As(err, &qe) || !qe.Gone {
		t.Errorf("error %v is no QMPError saying QEMU is gone", err)
	}
	_, err = Detach(ctx, DetachOptions{QMPSocket: missing})
	wantErr(t, err, "detach a NIC from nope: QMP connect on "+missing+": no such socket")
	_, err = List(ctx, missing)
	wantErr(t, err, "no such socket")

	// A socket whose QEMU died.
	q := vmctltest.NewQMP(t)
	dead := t.TempDir() + "/dead.qmp"
	l, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	_, err = Attach(ctx, AttachOptions{QMPSocket: dead, Network: "lan", API: a.Client()})
	wantErr(t, err, "nothing listens there (has the VM exited?)")

	// Another client holds the socket: QEMU does not greet a second one.
	var held net.Conn
	held, err = net.Dial("unix", q.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	buf := make([]byte, 100)
	if _, err := held.Read(buf); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = Attach(short, AttachOptions{QMPSocket: q.Socket, Network: "lan", API: a.Client()})
	cancelShort()
	wantErr(t, err, "did not greet within", "another QMP client holds the socket?")

	if c := a.Calls(); len(c) != 0 {
		t.Errorf("the API was asked %q", c)
	}
	nothingLeft(t, q, a)

	// Bad options are refused before anything is made.
	for _, o := range []AttachOptions{
		{Network: "lan", API: a.Client()},
		{QMPSocket: q.Socket, API: a.Client()},
		{QMPSocket: q.Socket, Network: "lan"},
		{QMPSocket: q.Socket, Network: "lan", API: a.Client(), Queues: MaxQueues + 1},
		{QMPSocket: q.Socket, Network: "lan", API: a.Client(), MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}},
	} {
		if _, err := Attach(ctx, o); err == nil {
			t.Errorf("Attach(%+v) succeeded", o)
		}
	}
	if _, err := Detach(ctx, DetachOptions{}); err == nil {
		t.Error("Detach without a QMP socket succeeded")
	}
	nothingLeft(t, q, a)
}

// TestFakeCancel cancels an attach half-way, as Ctrl-C would.
func TestFakeCancel(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	q, a := vmctltest.NewQMP(t), lanAPI(t)
	q.SetGuest(false, true)
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	_, err := Attach(ctx, AttachOptions{QMPSocket: q.Socket, Network: "lan", API: a.Client(), WaitGuest: time.Minute,
		Logf: func(f string, args ...any) {
			if strings.Contains(f, "waiting") {
				once.Do(func() { time.AfterFunc(200*time.Millisecond, cancel) })
			}
		}})
	wantErr(t, err, "context canceled")
	nothingLeft(t, q, a)
}
