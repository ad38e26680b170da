package bpf

import (
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

func TestAttachPort(t *testing.T) {
	a := testnet.NewHost(t, "10.71.0.1/24")
	b := testnet.NewHost(t, "10.71.0.2/24")
	// Join the two hosts with a bridge so traffic crosses both ports.
	br := testnet.Name("xsbr")
	testnet.Run(t, "ip", "link", "add", br, "type", "bridge")
	t.Cleanup(func() { _ = netlink.LinkDel(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}) })
	for _, p := range []string{a.Port, b.Port} {
		testnet.Run(t, "ip", "link", "set", p, "master", br)
	}
	testnet.Run(t, "ip", "link", "set", br, "up")

	l, err := netlink.LinkByName(a.Port)
	if err != nil {
		t.Fatal(err)
	}
	p, err := AttachPort(l.Attrs().Index, XDPModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Mode() != XDPModeDriver {
		t.Errorf("veth got %v mode, want native", p.Mode())
	}

	// A second owner is refused, with a message that says why.
	if _, err := AttachPort(l.Attrs().Index, XDPModeAuto); err == nil || !strings.Contains(err.Error(), "already runs an XDP program") {
		t.Errorf("second attach: got %v, want refusal", err)
	}

	// With no socket registered, frames pass to the kernel: the bridge
	// still forwards and the program counts them as passed.
	if err := a.Ping(b.IP.String(), 2); err != nil {
		t.Fatal(err)
	}
	s, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Passed == 0 || s.Redirected != 0 {
		t.Errorf("stats %+v: want passed > 0 and nothing redirected", s)
	}
	if err := p.Register(MaxQueues, 3); err == nil {
		t.Error("register beyond MaxQueues accepted")
	}
	if err := p.Unregister(0); err != nil {
		t.Errorf("unregister an empty queue: %v", err)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	l, _ = netlink.LinkByName(a.Port)
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Error("program still attached after Close")
	}
}
