package netdev

import (
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

func TestOpenTap(t *testing.T) {
	testnet.RequireRoot(t)
	name := testnet.Name("xstap")
	tap, err := OpenTap(name, TapOptions{Queues: 3, VnetHdr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	if len(tap.Files) != 3 {
		t.Fatalf("%d files, want one per queue", len(tap.Files))
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().NumRxQueues < 3 {
		t.Errorf("device has %d rx queues, want at least 3", l.Attrs().NumRxQueues)
	}
	flags, err := os.ReadFile("/sys/class/net/" + name + "/tun_flags")
	if err != nil {
		t.Fatal(err)
	}
	// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE = 0x5102
	if got := strings.TrimSpace(string(flags)); got != "0x5102" {
		t.Errorf("tun_flags %s, want 0x5102", got)
	}

	// Not persistent: the device goes with its files.
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Error("tap still exists after Close")
	}
}

func TestTapPersist(t *testing.T) {
	testnet.RequireRoot(t)
	name := testnet.Name("xstap")
	tap, err := OpenTap(name, TapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(l)
		}
	})
	if err := tap.Persist(true); err != nil {
		t.Fatal(err)
	}
	tap.Close()
	if _, err := netlink.LinkByName(name); err != nil {
		t.Fatalf("persistent tap gone after Close: %v", err)
	}
	// Another opener (QEMU, say) attaches to it with the same flags.
	again, err := OpenTap(name, TapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if err := again.Persist(true); err == nil {
		t.Error("Persist on a closed tap succeeded")
	}
}

func TestOpenTapErrors(t *testing.T) {
	testnet.RequireRoot(t)
	if _, err := OpenTap("averyveryverylongname", TapOptions{}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long name: %v", err)
	}
	// An existing device of another kind cannot be opened as a tap.
	h := testnet.NewHost(t, "")
	if _, err := OpenTap(h.Port, TapOptions{}); err == nil || !strings.Contains(err.Error(), "TUNSETIFF") {
		t.Errorf("veth as tap: %v", err)
	}
}
