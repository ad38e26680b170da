package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/config"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/nat"
)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", b)
	return len(b), nil
}

func start(t *testing.T, cfg *config.Config) *Daemon {
	t.Helper()
	d, err := Start(cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// udhcpcScript configures the lease like a distribution's script would and
// writes what it got to $OUT.
const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$mask" dev "$interface"
	echo "$ip $router $dns $mtu $domain" >"$OUT"
	;;
deconfig)
	ip addr flush dev "$interface"
	;;
esac
`

// dhcp runs busybox udhcpc on the host's eth0 until it has a lease (or
// gives up), with extra flags, and returns what the lease said.
func dhcp(t *testing.T, h *testnet.Host, flags ...string) (fields []string, err error) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "lease")
	args := append([]string{"env", "OUT=" + out, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "4", "-T", "1", "-s", script}, flags...)
	if b, err := h.Cmd(args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("udhcpc in %s: %v\n%s", h.Name, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("udhcpc in %s reported no lease: %v", h.Name, err)
	}
	return strings.Fields(string(b)), nil
}

func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDHCPThroughTheHostPort(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	a, b, reserved := testnet.NewHost(t, ""), testnet.NewHost(t, ""), testnet.NewHost(t, "")
	e1, e2, e3 := testnet.NewHost(t, ""), testnet.NewHost(t, ""), testnet.NewHost(t, "")
	// Networks get test-unique names: host port devices are named after them.
	lan, tiny := testnet.Name("l")[:7], testnet.Name("t")[:7]
	stateDir := t.TempDir()
	yaml := fmt.Sprintf(`
run_dir: %s
state_dir: %s
frames: 4096
networks:
  - name: %s
    gateway: 10.83.0.1/24
    gateway6: fd00:83::1/64
    nat: true
    ports: [{name: %s, mac: "%s"}, %s, %s]
    dhcp:
      range: [10.83.0.100, 10.83.0.110]
      dns: [10.83.0.1]
      domain: test.lan
      mtu: 1400
      lease_time: 10m
      reservations:
        - {mac: "%s", ip: 10.83.0.50, hostname: fixed}
  - name: %s
    gateway: 10.84.0.1/24
    ports: [%s, %s, %s]
    dhcp:
      range: [10.84.0.10, 10.84.0.11]
`, t.TempDir(), stateDir, lan, a.Port, a.MAC, b.Port, reserved.Port, reserved.MAC, tiny, e1.Port, e2.Port, e3.Port)
	cfg := mustParse(t, yaml)
	d := start(t, cfg)
	closed := false
	t.Cleanup(func() {
		if !closed {
			d.Close()
		}
	})

	if !natTable(t) {
		t.Error("no nftables table for the network with nat: true")
	}
	hostSide, _ := cfg.Networks[0].HostPortNames()
	link, err := netlink.LinkByName(hostSide)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, a := range addrs {
		have = append(have, a.IPNet.String())
	}
	if !slices.Contains(have, "10.83.0.1/24") || !slices.Contains(have, "fd00:83::1/64") {
		t.Errorf("host side %s has %v, want both gateways", hostSide, have)
	}
	st := d.Networks()
	if !st[0].NAT || st[1].NAT {
		t.Errorf("NAT status %v %v, want on and off", st[0].NAT, st[1].NAT)
	}
	if st[0].HostPort == nil || st[0].HostPort.Kind != "veth" || len(st[0].HostPort.Refused) != 2 {
		t.Errorf("host port status %+v, want veth with the two netkit refusals", st[0].HostPort)
	}

	la, err := dhcp(t, a)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(la[1:], " "); got != "10.83.0.1 10.83.0.1 1400 test.lan" {
		t.Errorf("lease options %q, want router, dns, mtu and domain", got)
	}
	lb, err := dhcp(t, b)
	if err != nil {
		t.Fatal(err)
	}
	inRange := func(ip string) bool {
		var last int
		_, err := fmt.Sscanf(ip, "10.83.0.%d", &last)
		return err == nil && last >= 100 && last <= 110
	}
	if !inRange(la[0]) || !inRange(lb[0]) || la[0] == lb[0] {
		t.Errorf("leases %s and %s: want two distinct addresses in the range", la[0], lb[0])
	}
	lr, err := dhcp(t, reserved)
	if err != nil {
		t.Fatal(err)
	}
	if lr[0] != "10.83.0.50" {
		t.Errorf("reserved host got %s, want 10.83.0.50", lr[0])
	}
	// a's port is secured: it may only use its lease, which port security
	// learnt before the ACK went out.
	if p, err := d.Switch().Port(a.Port); err != nil || !p.Security || len(p.AllowedIPv4) != 1 || p.AllowedIPv4[0] != la[0] {
		t.Errorf("a's port right after its lease: secured %v, allowed %v, %v; want secured, allowed %s", p.Security, p.AllowedIPv4, err, la[0])
	}
	// Through the switch to the gateway, the host's own stack.
	if err := a.Ping("10.83.0.1", 2); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(lb[0], 2); err != nil {
		t.Fatal(err)
	}

	// An exhausted pool: the third client gets nothing, the others keep
	// theirs and the server keeps serving.
	if _, err := dhcp(t, e1); err != nil {
		t.Fatal(err)
	}
	if _, err := dhcp(t, e2); err != nil {
		t.Fatal(err)
	}
	if _, err := dhcp(t, e3); err == nil {
		t.Error("a third client got a lease from a range of two")
	}
	if c := d.Networks()[1].DHCP; c == nil || c.PoolExhausted == 0 {
		t.Errorf("pool exhaustion not counted: %+v", c)
	}

	// A malformed packet is counted and dropped; the server keeps serving.
	// From a's secured port it does not get that far: it names no NIC,
	// let alone a's, and port security drops it.
	malformed := func(h *testnet.Host, from string) {
		t.Helper()
		if err := h.Do(func() error {
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
			if err != nil {
				return err
			}
			defer conn.Close()
			_, err = conn.WriteToUDP([]byte("not a DHCP message"), &net.UDPAddr{IP: net.ParseIP("10.83.0.1"), Port: 67})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	malformed(a, la[0])
	testnet.Eventually(t, 5*time.Second, "the secured port's malformed DHCP dropped", func() bool {
		p, err := d.Switch().Port(a.Port)
		return err == nil && p.Counters.Drops["spoofed_dhcp"] == 1
	})
	if n := d.Networks()[0].DHCP.Malformed; n != 0 {
		t.Errorf("the server saw %d malformed packets from a secured port", n)
	}
	malformed(b, lb[0])
	testnet.Eventually(t, 5*time.Second, "malformed packet counted", func() bool {
		return d.Networks()[0].DHCP.Malformed > 0
	})

	// A restart keeps the client's address.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	d = start(t, mustParse(t, yaml))
	closed = false
	again, err := dhcp(t, a)
	if err != nil {
		t.Fatal(err)
	}
	if again[0] != la[0] {
		t.Errorf("after a restart the client got %s, had %s", again[0], la[0])
	}

	// RELEASE frees the address. busybox udhcpc releases when it is
	// stopped in the foreground with -R (with -q it quits without).
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	leaseFile := filepath.Join(dir, "lease")
	client := b.Cmd("env", "OUT="+leaseFile, "busybox", "udhcpc", "-f", "-R", "-i", "eth0", "-t", "4", "-T", "1", "-s", script)
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "udhcpc to get a lease", func() bool {
		_, err := os.Stat(leaseFile)
		return err == nil
	})
	boundB := func() bool {
		leases, _ := d.Leases(lan)
		for _, l := range leases {
			if l.MAC.String() == b.MAC.String() && l.State == "bound" {
				return true
			}
		}
		return false
	}
	if !boundB() {
		t.Error("no bound lease for the client")
	}
	client.Process.Signal(syscall.SIGTERM)
	client.Wait()
	testnet.Eventually(t, 5*time.Second, "released lease gone", func() bool { return !boundB() })
	if _, err := d.Leases("nosuchnet"); err == nil {
		t.Error("leases of an unknown network: no error")
	}

	// Closing undoes it all: rules and host ports.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if natTable(t) {
		t.Error("the nftables table outlived the daemon")
	}
	for _, n := range cfg.Networks {
		host, sw := n.HostPortNames()
		for _, dev := range []string{host, sw} {
			if _, err := netlink.LinkByName(dev); err == nil {
				t.Errorf("host port device %s outlived the daemon", dev)
			}
		}
	}
}

func natTable(t *testing.T) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == nat.TableName {
			return true
		}
	}
	return false
}
