// Package testnet builds throw-away network worlds for tests that run as
// root: network namespaces, veth pairs and hosts with addresses. Everything
// it makes is removed when the test ends, also when the test fails.
package testnet

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xdpswitch/xdpswitch/internal/inns"
)

// RequireRoot fails the test when it does not run as root: these tests build
// namespaces and devices, and a silent skip would hide that nothing ran.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces and devices and must run as root (make test does)")
	}
}

// Name returns a short random device or namespace name with the given prefix,
// at most 15 bytes (IFNAMSIZ-1).
func Name(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	n := prefix + hex.EncodeToString(b[:])
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

// NS is a network namespace owned by one test.
type NS struct {
	Name string
}

// NewNS creates a namespace with its loopback up, removed at test end.
func NewNS(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	ns := &NS{Name: Name("xsns")}
	Run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() {
		// Tests end the processes they start themselves, by PID.
		_ = netns.DeleteNamed(ns.Name)
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Cmd returns a command that runs inside the namespace.
func (ns *NS) Cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// Run runs a command inside the namespace and fails the test on error.
func (ns *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Cmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Do runs fn on an OS thread switched into the namespace, for code that must
// create sockets or devices there.
func (ns *NS) Do(fn func() error) error { return inns.Do(ns.Name, fn) }

// Run runs a command in the test's own namespace and fails the test on error.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Host is a namespace with one interface, eth0, whose peer (Port) stays in the
// test's namespace to be plugged into a switch.
type Host struct {
	*NS
	Port string           // peer device in the caller's namespace
	MAC  net.HardwareAddr // eth0's address
	IP   net.IP           // eth0's IPv4 address, nil when none was given
}

// NewHost makes a namespace whose eth0 is one end of a veth pair, with the
// given IPv4 prefix ("" for none) and IPv6 off. Checksum offload is off on
// eth0: frames that cross an AF_XDP switch carry no offload state, so a
// partial checksum would arrive unfinished.
func NewHost(t testing.TB, cidr string) *Host {
	t.Helper()
	return NewHostQueues(t, cidr, 1)
}

// NewHostQueues is NewHost with a veth pair of several queues; the kernel
// spreads the host's flows over them.
func NewHostQueues(t testing.TB, cidr string, queues int) *Host {
	t.Helper()
	ns := NewNS(t)
	port := Name("xsp")
	veth := &netlink.Veth{
		LinkAttrs:       netlink.LinkAttrs{Name: port, NumTxQueues: queues, NumRxQueues: queues},
		PeerName:        "eth0",
		PeerNumTxQueues: uint32(queues),
		PeerNumRxQueues: uint32(queues),
	}
	target, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	veth.PeerNamespace = netlink.NsFd(int(target))
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", port, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(port); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	Run(t, "ip", "link", "set", port, "up")
	ns.Run(t, "ethtool", "-K", "eth0", "tx", "off")
	// No IPv6: its router solicitations and MLD reports are multicast that
	// would blur what tests count.
	ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
	ns.Run(t, "ip", "link", "set", "eth0", "up")
	h := &Host{NS: ns, Port: port}
	if cidr != "" {
		ns.Run(t, "ip", "addr", "add", cidr, "dev", "eth0")
		ip, _, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		h.IP = ip
	}
	out := ns.Run(t, "cat", "/sys/class/net/eth0/address")
	h.MAC, err = net.ParseMAC(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Ping sends count pings to addr from the host and reports whether all
// were answered. The wait per reply is bounded.
func (h *Host) Ping(addr string, count int) error {
	out, err := h.Cmd("ping", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", "-w", fmt.Sprint(2+count), addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v\n%s", addr, h.Name, err, out)
	}
	if !bytes.Contains(out, []byte(fmt.Sprintf("%d received", count))) {
		return fmt.Errorf("ping %s from %s: lost replies\n%s", addr, h.Name, out)
	}
	return nil
}

// Eventually polls cond until it holds or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
