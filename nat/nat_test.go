package nat

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// world is a router namespace (the daemon's host) between VM namespaces, each
// on its own subnet, and an "outside" namespace that has no route back to the
// VM subnets: a VM reaches it only when the router masquerades.
type world struct {
	router  *testnet.NS
	outside *testnet.NS
	vms     []*testnet.NS
	ifaces  []string       // router's interface facing vms[i]
	subnets []netip.Prefix // vms[i]'s subnet
	fd      int            // router's namespace
}

const outsideAddr = "10.82.0.2"

// newWorld builds a router, an outside host and n VMs; VM i has 10.(81+2i).0.2/24
// behind router interface "tovmI" (10.(81+2i).0.1).
func newWorld(t *testing.T, n int) *world {
	t.Helper()
	w := &world{router: testnet.NewNS(t), outside: testnet.NewNS(t)}
	// Links are made inside the namespaces, so nothing is left in the test's
	// own namespace when a test stops halfway.
	w.router.Run(t, "ip", "link", "add", "toout", "type", "veth", "peer", "name", "eth0", "netns", w.outside.Name)
	w.router.Run(t, "ip", "addr", "add", "10.82.0.1/24", "dev", "toout")
	w.router.Run(t, "ip", "link", "set", "toout", "up")
	w.outside.Run(t, "ip", "addr", "add", outsideAddr+"/24", "dev", "eth0")
	w.outside.Run(t, "ip", "link", "set", "eth0", "up")
	for i := range n {
		vm := testnet.NewNS(t)
		iface := fmt.Sprintf("tovm%d", i)
		net3 := 81 + 2*i
		w.router.Run(t, "ip", "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", vm.Name)
		w.router.Run(t, "ip", "addr", "add", fmt.Sprintf("10.%d.0.1/24", net3), "dev", iface)
		w.router.Run(t, "ip", "link", "set", iface, "up")
		vm.Run(t, "ip", "addr", "add", fmt.Sprintf("10.%d.0.2/24", net3), "dev", "eth0")
		vm.Run(t, "ip", "link", "set", "eth0", "up")
		vm.Run(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.%d.0.1", net3))
		w.vms = append(w.vms, vm)
		w.ifaces = append(w.ifaces, iface)
		w.subnets = append(w.subnets, netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/24", net3)))
	}
	h, err := netns.GetFromName(w.router.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	w.fd = int(h)
	if got := w.forwarding(t); got != "0" {
		t.Fatalf("a new namespace has ip_forward %q, want 0", got)
	}
	return w
}

func (w *world) enable(t *testing.T, i int, network string) *Masquerade {
	t.Helper()
	m, err := Enable(network, w.subnets[i], w.ifaces[i], WithNetNS(w.fd))
	if err != nil {
		t.Fatal(err)
	}
	// Close holds the namespace open, so it must run before the namespace
	// goes; it does nothing when the test closed m already.
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func (w *world) forwarding(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(w.router.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward"))
}

func (w *world) setForwarding(t *testing.T, v string) {
	t.Helper()
	w.router.Run(t, "sh", "-c", "echo "+v+" > /proc/sys/net/ipv4/ip_forward")
}

// ping reports whether vm i gets an answer from outside within two seconds.
func (w *world) ping(i int) error {
	out, err := w.vms[i].Cmd("ping", "-n", "-c", "1", "-W", "2", "-w", "2", outsideAddr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s from vm %d: %v\n%s", outsideAddr, i, err, out)
	}
	return nil
}

func (w *world) mustPing(t *testing.T, i int) {
	t.Helper()
	if err := w.ping(i); err != nil {
		t.Fatal(err)
	}
}

func (w *world) mustNotPing(t *testing.T, i int) {
	t.Helper()
	if err := w.ping(i); err == nil {
		t.Fatalf("vm %d reached %s, want no answer (outside has no route back)", i, outsideAddr)
	}
}

// tables lists the ip-family tables in the router.
func (w *world) tables(t *testing.T) map[string]bool {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(w.fd))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, tb := range ts {
		names[tb.Name] = true
	}
	return names
}

// comments returns the comments of the rules in the xdpswitch chain.
func (w *world) comments(t *testing.T) []string {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(w.fd))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := conn.GetRules(table, chain)
	if err != nil {
		t.Fatal(err)
	}
	var cs []string
	for _, r := range rules {
		cs = append(cs, ruleComment(r))
	}
	return cs
}

func (w *world) noTable(t *testing.T) {
	t.Helper()
	if w.tables(t)[TableName] {
		t.Fatalf("table ip %s still in the router: %q", TableName, w.comments(t))
	}
}

// sourceSeenOutside connects from vm i to a listener in outside and returns
// the peer address the listener saw.
func (w *world) sourceSeenOutside(t *testing.T, i int) netip.Addr {
	t.Helper()
	var ln *net.TCPListener
	if err := w.outside.Do(func() error {
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.ParseIP(outsideAddr)})
		ln = l
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ln.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	type accepted struct {
		addr netip.Addr
		err  error
	}
	got := make(chan accepted, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			got <- accepted{err: err}
			return
		}
		defer c.Close()
		got <- accepted{addr: c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()}
	}()
	if err := w.vms[i].Do(func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("connect from vm %d to %s: %v", i, ln.Addr(), err)
	}
	a := <-got
	if a.err != nil {
		t.Fatalf("accept in outside: %v", a.err)
	}
	return a.addr
}

func TestMasqueradeReachesOutside(t *testing.T) {
	w := newWorld(t, 1)

	// Control: with forwarding but no masquerade, the replies have no way
	// back, so any success later is the masquerade's doing.
	w.setForwarding(t, "1")
	w.mustNotPing(t, 0)
	w.setForwarding(t, "0")

	m := w.enable(t, 0, "lan")
	if got := w.forwarding(t); got != "1" {
		t.Fatalf("ip_forward after Enable = %q, want 1", got)
	}
	w.mustPing(t, 0)
	if got, want := w.sourceSeenOutside(t, 0), netip.MustParseAddr("10.82.0.1"); got != want {
		t.Fatalf("outside saw the connection from %v, want the router's %v", got, want)
	}
	if got, want := w.comments(t), []string{forwardTag + " (was 0)", networkTag + "lan"}; !slices.Equal(got, want) {
		t.Fatalf("rules in the xdpswitch chain: %q, want %q", got, want)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(w.fd))
	if err != nil {
		t.Fatal(err)
	}
	c, err := conn.ListChain(table, chainName)
	if err != nil {
		t.Fatal(err)
	}
	if c.Type != nftables.ChainTypeNAT || c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookPostrouting ||
		c.Priority == nil || *c.Priority != *nftables.ChainPriorityNATSource {
		t.Fatalf("chain %s: type %q hook %v priority %v, want nat postrouting srcnat", chainName, c.Type, c.Hooknum, c.Priority)
	}

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	w.noTable(t)
	if got := w.forwarding(t); got != "0" {
		t.Fatalf("ip_forward after Close = %q, want 0 again", got)
	}
	w.setForwarding(t, "1") // so that the failure below is the missing masquerade's
	w.mustNotPing(t, 0)
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Traffic that leaves through the network's own host port keeps its source:
// the router talks to the VM from a secondary address of the subnet, which a
// masquerade would rewrite to the port's primary 10.81.0.1.
func TestHostPortNotMasqueraded(t *testing.T) {
	w := newWorld(t, 1)
	w.router.Run(t, "ip", "addr", "add", "10.81.0.5/24", "dev", w.ifaces[0])
	w.enable(t, 0, "lan")
	var ln *net.TCPListener
	if err := w.vms[0].Do(func() error {
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.ParseIP("10.81.0.2")})
		ln = l
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ln.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := w.router.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.81.0.5")}}
		c, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatal(err)
	}
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(), netip.MustParseAddr("10.81.0.5"); got != want {
		t.Fatalf("VM saw the router as %v, want the unmasqueraded %v", got, want)
	}
}

func TestTwoNetworksCloseOne(t *testing.T) {
	w := newWorld(t, 2)
	a := w.enable(t, 0, "a")
	w.enable(t, 1, "b")
	w.mustPing(t, 0)
	w.mustPing(t, 1)

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := w.comments(t), []string{forwardTag + " (was 0)", networkTag + "b"}; !slices.Equal(got, want) {
		t.Fatalf("rules after closing a: %q, want %q", got, want)
	}
	if got := w.forwarding(t); got != "1" {
		t.Fatalf("ip_forward with b still masqueraded = %q, want 1", got)
	}
	w.mustNotPing(t, 0)
	w.mustPing(t, 1)
	if got, want := w.sourceSeenOutside(t, 1), netip.MustParseAddr("10.82.0.1"); got != want {
		t.Fatalf("outside saw b's VM as %v, want %v", got, want)
	}
}

// Closing in the other order: the last one out removes the table and the
// forwarding the first one turned on.
func TestTwoNetworksLastCloseRestoresForwarding(t *testing.T) {
	w := newWorld(t, 2)
	a := w.enable(t, 0, "a")
	b := w.enable(t, 1, "b")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	w.noTable(t)
	if got := w.forwarding(t); got != "0" {
		t.Fatalf("ip_forward after both closed = %q, want 0", got)
	}
}

func TestForwardingLeftOnWhenAlreadyOn(t *testing.T) {
	w := newWorld(t, 1)
	w.setForwarding(t, "1")
	m := w.enable(t, 0, "lan")
	if got, want := w.comments(t), []string{networkTag + "lan"}; !slices.Equal(got, want) {
		t.Fatalf("rules: %q, want %q (no forwarding marker)", got, want)
	}
	w.mustPing(t, 0)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	w.noTable(t)
	if got := w.forwarding(t); got != "1" {
		t.Fatalf("ip_forward after Close = %q, want 1 as it was before Enable", got)
	}
}

func TestOtherTablesUntouched(t *testing.T) {
	w := newWorld(t, 1)
	conn, err := nftables.New(nftables.WithNetNSFd(w.fd))
	if err != nil {
		t.Fatal(err)
	}
	other := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "other"})
	oc := conn.AddChain(&nftables.Chain{Name: "c", Table: other})
	conn.AddRule(&nftables.Rule{Table: other, Chain: oc, Exprs: []expr.Any{&expr.Counter{}}})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}

	m := w.enable(t, 0, "lan")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	w.enable(t, 0, "lan")
	if err := Cleanup(WithNetNS(w.fd)); err != nil {
		t.Fatal(err)
	}
	if got := w.tables(t); !got["other"] || got[TableName] {
		t.Fatalf("tables after Close and Cleanup: %v, want only other", got)
	}
	rules, err := conn.GetRules(other, oc)
	if err != nil || len(rules) != 1 {
		t.Fatalf("rules in the other table: %d, %v; want 1", len(rules), err)
	}
}

func TestCleanupRemovesLeftovers(t *testing.T) {
	w := newWorld(t, 2)
	// A crashed daemon: rules installed, never closed.
	a := w.enable(t, 0, "a")
	b := w.enable(t, 1, "b")
	w.mustPing(t, 0)

	if err := Cleanup(WithNetNS(w.fd)); err != nil {
		t.Fatal(err)
	}
	w.noTable(t)
	if got := w.forwarding(t); got != "0" {
		t.Fatalf("ip_forward after Cleanup = %q, want 0 (the crashed run turned it on)", got)
	}
	w.setForwarding(t, "1")
	w.mustNotPing(t, 0)
	w.setForwarding(t, "0")
	if err := Cleanup(WithNetNS(w.fd)); err != nil {
		t.Fatalf("Cleanup with nothing to clean: %v", err)
	}
	// The old handles are gone: closing them changes nothing.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	w.noTable(t)

	// The restarted daemon enables again.
	w.enable(t, 0, "a")
	w.mustPing(t, 0)
}

// A rule for a network that is already there (a crashed run's, not yet
// cleaned up) is refused, and the existing one is left working.
func TestEnableTwiceRefused(t *testing.T) {
	w := newWorld(t, 1)
	w.enable(t, 0, "lan")
	_, err := Enable("lan", w.subnets[0], w.ifaces[0], WithNetNS(w.fd))
	if err == nil || !strings.Contains(err.Error(), `nat: enable for network "lan": already masqueraded`) {
		t.Fatalf("second Enable: %v, want already masqueraded", err)
	}
	if got, want := w.comments(t), []string{forwardTag + " (was 0)", networkTag + "lan"}; !slices.Equal(got, want) {
		t.Fatalf("rules: %q, want %q", got, want)
	}
	w.mustPing(t, 0)
}

func TestEnableBadInput(t *testing.T) {
	w := newWorld(t, 1)
	good := w.subnets[0]
	cases := []struct {
		name    string
		network string
		subnet  netip.Prefix
		iface   string
		opts    []Option
		want    string
	}{
		{"no subnet", "lan", netip.Prefix{}, w.ifaces[0], nil, "not a valid prefix"},
		{"ipv6 subnet", "lan", netip.MustParsePrefix("fd00::/64"), w.ifaces[0], nil, "not IPv4"},
		{"everything", "lan", netip.MustParsePrefix("0.0.0.0/0"), w.ifaces[0], nil, "every packet"},
		{"no iface", "lan", good, "", nil, "host interface name is empty"},
		{"long iface", "lan", good, "averyveryverylongname", nil, "longer than 15"},
		{"slash iface", "lan", good, "a/b", nil, "character Linux refuses"},
		{"missing iface", "lan", good, "nosuchdev0", nil, `host interface "nosuchdev0"`},
		{"no network", "", good, w.ifaces[0], nil, "network name is empty"},
		{"quote in network", `l"an`, good, w.ifaces[0], nil, "comment cannot hold"},
		{"bad netns", "lan", good, w.ifaces[0], []Option{WithNetNS(1 << 20)}, "network namespace fd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			if opts == nil {
				opts = []Option{WithNetNS(w.fd)}
			}
			m, err := Enable(c.network, c.subnet, c.iface, opts...)
			if err == nil {
				_ = m.Close()
				t.Fatal("Enable succeeded")
			}
			prefix := fmt.Sprintf("nat: enable for network %q: ", c.network)
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want %q ... %q", err, prefix, c.want)
			}
			w.noTable(t)
			if got := w.forwarding(t); got != "0" {
				t.Fatalf("ip_forward after a refused Enable = %q, want 0", got)
			}
		})
	}
}

// An unmasked subnet (the gateway's address and length) means its network.
func TestEnableMasksSubnet(t *testing.T) {
	w := newWorld(t, 1)
	m, err := Enable("lan", netip.MustParsePrefix("10.81.0.1/24"), w.ifaces[0], WithNetNS(w.fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if m.subnet != w.subnets[0] {
		t.Fatalf("subnet %v, want %v", m.subnet, w.subnets[0])
	}
	w.mustPing(t, 0)
}

func TestRuleComment(t *testing.T) {
	for _, c := range []struct {
		ud   []byte
		want string
	}{
		{nil, ""},
		{comment("xdpswitch network a"), "xdpswitch network a"},
		{append([]byte{5, 1, 0}, comment("x")...), "x"},
		{[]byte{0, 200, 'a'}, ""}, // length past the end
		{[]byte{0}, ""},
	} {
		if got := ruleComment(&nftables.Rule{UserData: c.ud}); got != c.want {
			t.Errorf("ruleComment(%v) = %q, want %q", c.ud, got, c.want)
		}
	}
}

func TestCloseNil(t *testing.T) {
	var m *Masquerade
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// Without WithNetNS, everything happens in the caller's namespace: here a
// thread inside the router, standing in for the daemon on its host.
func TestCallerNamespace(t *testing.T) {
	w := newWorld(t, 1)
	var m *Masquerade
	if err := w.router.Do(func() error {
		var err error
		m, err = Enable("lan", w.subnets[0], w.ifaces[0])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Close acts where it is called: only ever inside the router.
		if err := w.router.Do(m.Close); err != nil {
			t.Error(err)
		}
	})
	if got := w.forwarding(t); got != "1" {
		t.Fatalf("ip_forward after Enable = %q, want 1", got)
	}
	w.mustPing(t, 0)
	if err := w.router.Do(m.Close); err != nil {
		t.Fatal(err)
	}
	w.noTable(t)
	if got := w.forwarding(t); got != "0" {
		t.Fatalf("ip_forward after Close = %q, want 0", got)
	}
	w.enable(t, 0, "lan")
	if err := w.router.Do(func() error { return Cleanup() }); err != nil {
		t.Fatal(err)
	}
	w.noTable(t)
}
