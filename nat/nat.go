// Package nat lets the VMs of a switch network with `nat: true` reach the
// world through the host: it masquerades the network's subnet when it leaves
// through any host interface other than the network's own host port.
//
// Everything lives in one nftables table owned by xdpswitch (family ip, name
// "xdpswitch"), so the daemon never edits anyone else's ruleset and can drop
// its leftovers wholesale after a crash. Each network's rule carries a comment
// naming the network, so several networks share the table and each removes
// only its own rule.
//
// No filter rules are added: a host firewall whose forward policy is drop
// must itself accept traffic from and to the masqueraded subnets.
//
// The functions and methods here read the table and then change it, so they
// must be called from one goroutine at a time (the daemon's control loop).
package nat

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"unicode"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

const (
	// TableName is the nftables table (family ip) that xdpswitch owns.
	TableName = "xdpswitch"
	chainName = "postrouting"

	// Rule comments: how Close and Cleanup tell rules apart.
	networkTag = "xdpswitch network "
	// forwardTag marks a rule without expressions (it matches nothing and
	// does nothing) saying xdpswitch turned IPv4 forwarding on. It lives in
	// the kernel with the table, so whoever removes the table, even the next
	// run's Cleanup after a crash, knows to turn forwarding off again.
	forwardTag = "xdpswitch turned ip_forward on"

	ipForward = "/proc/sys/net/ipv4/ip_forward"

	// Comments are shown and re-parsed by the nft tool, which caps them at
	// 128 bytes; the tag takes the rest.
	maxNetworkName = 100
)

// Option changes where Enable (and so Close) and Cleanup act.
type Option func(*options)

type options struct {
	netns int // -1: the caller's namespace
}

// WithNetNS acts inside the network namespace referred to by fd instead of
// the caller's (tests build a whole host in a namespace). The descriptor is
// duplicated, so the caller may close fd once Enable returns.
func WithNetNS(fd int) Option {
	return func(o *options) { o.netns = fd }
}

// Masquerade is one network's masquerade rule; Close removes it.
type Masquerade struct {
	network string
	subnet  netip.Prefix
	iface   string
	netns   int    // our own duplicate, or -1
	handle  uint64 // the rule's nftables handle
	closed  bool
}

var (
	table = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	chain = &nftables.Chain{
		Name:     chainName,
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
)

// Enable masquerades subnet's traffic that leaves through any interface other
// than hostIface (the network's host port, where the VMs' own traffic to the
// host stays unmasqueraded), and turns IPv4 forwarding on if it is off.
func Enable(network string, subnet netip.Prefix, hostIface string, opts ...Option) (*Masquerade, error) {
	m, err := enable(network, subnet, hostIface, opts)
	if err != nil {
		return nil, fmt.Errorf("nat: enable for network %q: %w", network, err)
	}
	return m, nil
}

func enable(network string, subnet netip.Prefix, hostIface string, opts []Option) (*Masquerade, error) {
	if err := checkNetwork(network); err != nil {
		return nil, err
	}
	switch {
	case !subnet.IsValid():
		return nil, errors.New("subnet: not a valid prefix")
	case !subnet.Addr().Is4():
		return nil, fmt.Errorf("subnet %s: not IPv4 (the table is family ip)", subnet)
	case subnet.Bits() == 0:
		return nil, fmt.Errorf("subnet %s: would masquerade every packet the host sends", subnet)
	}
	subnet = subnet.Masked()
	if err := checkIfaceName(hostIface); err != nil {
		return nil, err
	}

	o := options{netns: -1}
	for _, opt := range opts {
		opt(&o)
	}
	nsfd := -1
	if o.netns >= 0 {
		fd, err := unix.FcntlInt(uintptr(o.netns), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return nil, fmt.Errorf("network namespace fd %d: %w", o.netns, err)
		}
		nsfd = fd
	}
	m := &Masquerade{network: network, subnet: subnet, iface: hostIface, netns: nsfd}
	if err := m.install(); err != nil {
		m.releaseNS()
		return nil, err
	}
	return m, nil
}

func (m *Masquerade) install() error {
	if err := inNS(m.netns, func() error {
		_, err := net.InterfaceByName(m.iface)
		return err
	}); err != nil {
		return fmt.Errorf("host interface %q: %w", m.iface, err)
	}

	conn, err := newConn(m.netns)
	if err != nil {
		return err
	}
	st, err := readState(conn)
	if err != nil {
		return err
	}
	if len(st.network(m.network)) > 0 {
		return errors.New("already masqueraded (a leftover of an earlier run? Cleanup removes those)")
	}

	old, err := readForward(m.netns)
	if err != nil {
		return err
	}
	turnedOn := old != "1"
	if turnedOn {
		if err := writeForward(m.netns, "1"); err != nil {
			return err
		}
	}
	undoForward := func(err error) error {
		if turnedOn {
			if werr := writeForward(m.netns, old); werr != nil {
				err = errors.Join(err, werr)
			}
		}
		return err
	}

	conn.AddTable(table)
	conn.AddChain(chain)
	if turnedOn && st.forwardMarker == nil {
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, UserData: comment(forwardTag + " (was " + old + ")")})
	}
	conn.AddRule(&nftables.Rule{
		Table:    table,
		Chain:    chain,
		Exprs:    masqExprs(m.subnet, m.iface),
		UserData: comment(networkTag + m.network),
	})
	if err := conn.Flush(); err != nil {
		return undoForward(fmt.Errorf("install nftables rule: %w", err))
	}

	// The kernel picks the handle; look it up so Close deletes exactly this
	// rule and not a later one for the same network. Should this fail, the
	// rule stays (forwarding on) for the next start's Cleanup.
	st, err = readState(conn)
	if err != nil {
		return err
	}
	own := st.network(m.network)
	if len(own) != 1 {
		return fmt.Errorf("installed rule not found in table %s (found %d)", TableName, len(own))
	}
	m.handle = own[0].Handle
	return nil
}

// Close removes this network's rule, and the whole table once no network is
// left in it; forwarding is turned back off then if xdpswitch turned it on.
// Flows already masqueraded keep their conntrack entries until they expire.
// Closing twice, or after Cleanup, does nothing.
func (m *Masquerade) Close() error {
	if m == nil || m.closed {
		return nil
	}
	if err := m.remove(); err != nil {
		return fmt.Errorf("nat: close for network %q: %w", m.network, err)
	}
	m.closed = true
	m.releaseNS()
	return nil
}

func (m *Masquerade) remove() error {
	conn, err := newConn(m.netns)
	if err != nil {
		return err
	}
	st, err := readState(conn)
	if err != nil {
		return err
	}
	var own *nftables.Rule
	others := 0
	for _, r := range st.networks {
		if r.Handle == m.handle && ruleComment(r) == networkTag+m.network {
			own = r
		} else {
			others++
		}
	}
	if own == nil {
		return nil // already gone: Cleanup, or someone else, removed it
	}
	if others > 0 {
		if err := conn.DelRule(own); err != nil {
			return err
		}
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("delete nftables rule: %w", err)
		}
		return nil
	}
	return dropTable(conn, st, m.netns)
}

func (m *Masquerade) releaseNS() {
	if m.netns >= 0 {
		_ = unix.Close(m.netns)
		m.netns = -1
	}
}

// Cleanup removes the whole xdpswitch table, with every network's rule in it,
// and turns forwarding back off if xdpswitch had turned it on. The daemon
// calls it at start, before any Enable, to undo what a crashed run left.
func Cleanup(opts ...Option) error {
	o := options{netns: -1}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cleanup(o.netns); err != nil {
		return fmt.Errorf("nat: cleanup: %w", err)
	}
	return nil
}

func cleanup(nsfd int) error {
	conn, err := newConn(nsfd)
	if err != nil {
		return err
	}
	st, err := readState(conn)
	if err != nil {
		return err
	}
	if !st.table {
		return nil
	}
	return dropTable(conn, st, nsfd)
}

// dropTable deletes the table, then restores forwarding if the table says
// xdpswitch turned it on.
func dropTable(conn *nftables.Conn, st state, nsfd int) error {
	conn.DelTable(table)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("delete table %s: %w", TableName, err)
	}
	if st.forwardMarker != nil {
		if err := writeForward(nsfd, "0"); err != nil {
			return err
		}
	}
	return nil
}

func newConn(nsfd int) (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if nsfd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(nsfd))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return conn, nil
}

// state is what the xdpswitch table holds right now.
type state struct {
	table         bool
	networks      []*nftables.Rule // rules tagged with a network name
	forwardMarker *nftables.Rule
}

func (s state) network(name string) []*nftables.Rule {
	var rs []*nftables.Rule
	for _, r := range s.networks {
		if ruleComment(r) == networkTag+name {
			rs = append(rs, r)
		}
	}
	return rs
}

func readState(conn *nftables.Conn) (state, error) {
	var st state
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return st, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			st.table = true
		}
	}
	if !st.table {
		return st, nil
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return st, fmt.Errorf("list nftables chains: %w", err)
	}
	found := false
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == TableName && c.Name == chainName {
			found = true
		}
	}
	if !found {
		return st, nil
	}
	rules, err := conn.GetRules(table, chain)
	if err != nil {
		return st, fmt.Errorf("list rules of table %s: %w", TableName, err)
	}
	for _, r := range rules {
		c := ruleComment(r)
		switch {
		case strings.HasPrefix(c, networkTag):
			st.networks = append(st.networks, r)
		case strings.HasPrefix(c, forwardTag):
			st.forwardMarker = r
		}
	}
	return st, nil
}

// masqExprs is `ip saddr <subnet> oifname != <iface> masquerade`.
func masqExprs(subnet netip.Prefix, iface string) []expr.Any {
	addr := subnet.Addr().As4()
	ifname := make([]byte, unix.IFNAMSIZ) // zero-padded: an exact name, not a prefix
	copy(ifname, iface)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(subnet.Bits(), 32), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		&expr.Masq{},
	}
}

func comment(s string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, s)
}

// ruleComment reads the comment TLV by hand: the library's reader indexes
// past the end on malformed user data, and a panic is never acceptable here.
func ruleComment(r *nftables.Rule) string {
	b := r.UserData
	for len(b) >= 2 {
		typ, n := userdata.Type(b[0]), int(b[1])
		if len(b) < 2+n {
			return ""
		}
		if typ == userdata.TypeComment {
			return string(bytes.TrimRight(b[2:2+n], "\x00"))
		}
		b = b[2+n:]
	}
	return ""
}

func checkNetwork(name string) error {
	if name == "" {
		return errors.New("network name is empty")
	}
	if len(name) > maxNetworkName {
		return fmt.Errorf("network name longer than %d bytes", maxNetworkName)
	}
	for _, r := range name {
		// The name ends up in an nft comment, which nft prints in quotes.
		if !unicode.IsPrint(r) || r == '"' {
			return fmt.Errorf("network name has %q, which an nftables comment cannot hold", r)
		}
	}
	return nil
}

func checkIfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("host interface name is empty")
	case len(name) >= unix.IFNAMSIZ:
		return fmt.Errorf("host interface name %q is longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("host interface name %q is not valid", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("host interface name %q has a character Linux refuses", name)
	}
	return nil
}

func readForward(nsfd int) (string, error) {
	var v string
	err := inNS(nsfd, func() error {
		b, err := os.ReadFile(ipForward)
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read IPv4 forwarding: %w", err)
	}
	return v, nil
}

func writeForward(nsfd int, v string) error {
	err := inNS(nsfd, func() error {
		return os.WriteFile(ipForward, []byte(v+"\n"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("set IPv4 forwarding to %s: %w", v, err)
	}
	return nil
}

// inNS runs fn on a thread inside the namespace nsfd (-1: right here). Files
// under /proc/sys/net and interface lookups answer for the namespace of the
// thread that makes them.
func inNS(nsfd int, fn func() error) error {
	if nsfd < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with this goroutine instead of
		// running other goroutines in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
