package netdev

import (
	"net"
	"strings"
	"testing"

	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

func TestCreateHostPort(t *testing.T) {
	testnet.RequireRoot(t)
	host, sw := testnet.Name("xsh"), testnet.Name("xss")
	hp, err := CreateHostPort(host, sw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hp.Delete() })

	t.Logf("host port %s, refused: %q", hp.Kind, hp.Refused)
	// These kernels have no netkit: both netkit kinds are refused, with the
	// reason, and a veth pair is made.
	if hp.Kind != Veth || hp.Switch != sw || hp.Host != host {
		t.Errorf("got %+v, want a veth pair %s/%s", hp, host, sw)
	}
	if len(hp.Refused) != 2 || !strings.HasPrefix(hp.Refused[0], "netkit-single: ") || !strings.HasPrefix(hp.Refused[1], "netkit-pair: ") {
		t.Errorf("refusals %q, want netkit-single and netkit-pair", hp.Refused)
	}
	for _, name := range []string{host, sw} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().Flags&1 == 0 || l.Attrs().Alias != hostPortAlias {
			t.Errorf("%s: flags %v alias %q, want up and marked", name, l.Attrs().Flags, l.Attrs().Alias)
		}
	}
	e, err := ethtool.NewEthtool()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	features, err := e.Features(host)
	if err != nil {
		t.Fatal(err)
	}
	for f, on := range features {
		if on && (strings.HasPrefix(f, "tx-checksum") || strings.HasSuffix(f, "segmentation")) {
			t.Errorf("%s still has %s on", host, f)
		}
	}

	// The gateway's address is the same in every run.
	mac := func() string {
		t.Helper()
		l, err := netlink.LinkByName(host)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().HardwareAddr.String()
	}
	first := mac()
	if first != hp.MAC.String() || first != HostPortMAC(host).String() {
		t.Errorf("%s has %s, want %s", host, first, HostPortMAC(host))
	}

	// A leftover of a crashed run is replaced.
	again, err := CreateHostPort(host, sw)
	if err != nil {
		t.Fatalf("replacing a leftover: %v", err)
	}
	if m := mac(); m != first {
		t.Errorf("%s has %s in the second run, %s in the first", host, m, first)
	}
	if err := again.Delete(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{host, sw} {
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("%s left after Delete", name)
		}
	}
	if err := again.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestHostPortMAC(t *testing.T) {
	a, b := HostPortMAC("xsh-lan"), HostPortMAC("xsh-dmz")
	if a.String() == b.String() {
		t.Errorf("two networks' host ports share %s", a)
	}
	if a.String() != HostPortMAC("xsh-lan").String() {
		t.Error("the same name gave two addresses")
	}
	for _, m := range []net.HardwareAddr{a, b} {
		if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
			t.Errorf("%s is not a locally administered unicast address", m)
		}
	}
}

func TestCreateHostPortRefusesForeignDevice(t *testing.T) {
	h := testnet.NewHost(t, "")
	if _, err := CreateHostPort(h.Port, testnet.Name("xss")); err == nil || !strings.Contains(err.Error(), "not one the switch made") {
		t.Fatalf("got %v, want a refusal to replace the operator's device", err)
	}
	if _, err := netlink.LinkByName(h.Port); err != nil {
		t.Errorf("the foreign device was removed: %v", err)
	}
}
