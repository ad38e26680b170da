package dhcpd

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var (
	testServerIP = netip.MustParseAddr("10.77.0.1")
	testSubnet   = netip.MustParsePrefix("10.77.0.0/24")
)

var discardLogger = slog.New(slog.DiscardHandler)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a valid config; tests adjust what they exercise.
func testConfig(t testing.TB) Config {
	return Config{
		Network:    "testnet",
		Interface:  "test0",
		ServerIP:   testServerIP,
		Subnet:     testSubnet,
		RangeStart: netip.MustParseAddr("10.77.0.10"),
		RangeEnd:   netip.MustParseAddr("10.77.0.20"),
		DNS:        []netip.Addr{netip.MustParseAddr("10.77.0.53"), netip.MustParseAddr("10.77.0.54")},
		Domain:     "xdp.test",
		MTU:        1450,
		LeaseTime:  time.Hour,
		StateDir:   t.TempDir(),
		Logger:     testLogger(t),
	}
}

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, last} }

// must fails the test when building a message fails.
func must(t testing.TB) func(*dhcpv4.DHCPv4, error) *dhcpv4.DHCPv4 {
	return func(m *dhcpv4.DHCPv4, err error) *dhcpv4.DHCPv4 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
}

func discoverMsg(t testing.TB, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	return must(t)(dhcpv4.NewDiscovery(hw, mods...))
}

// requestMsg builds a REQUEST; zero addresses leave the field or option out,
// which selects the client state (RFC 2131 4.3.2).
func requestMsg(t testing.TB, hw net.HardwareAddr, ciaddr, requested, serverID netip.Addr) *dhcpv4.DHCPv4 {
	mods := []dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest)}
	if ciaddr.IsValid() {
		mods = append(mods, dhcpv4.WithClientIP(ciaddr.AsSlice()))
	}
	if requested.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(requested.AsSlice())))
	}
	if serverID.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID.AsSlice())))
	}
	return must(t)(dhcpv4.New(mods...))
}

func releaseMsg(t testing.TB, hw net.HardwareAddr, ip netip.Addr) *dhcpv4.DHCPv4 {
	return must(t)(dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
		dhcpv4.WithClientIP(ip.AsSlice()), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice()))))
}

func declineMsg(t testing.TB, hw net.HardwareAddr, ip netip.Addr) *dhcpv4.DHCPv4 {
	return must(t)(dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testServerIP.AsSlice()))))
}

func informMsg(t testing.TB, hw net.HardwareAddr, ip netip.Addr) *dhcpv4.DHCPv4 {
	return must(t)(dhcpv4.NewInform(hw, ip.AsSlice()))
}

func addrOf(t testing.TB, ip net.IP) netip.Addr {
	t.Helper()
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		t.Fatalf("bad address %v", ip)
	}
	return a.Unmap()
}

// handle runs one message and checks the reply's type (None: no reply).
func handle(t testing.TB, s *Server, req *dhcpv4.DHCPv4, now time.Time, want dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	t.Helper()
	rep, err := s.Handle(req, now)
	if want == dhcpv4.MessageTypeNone {
		if rep != nil {
			t.Fatalf("%v: want no reply, got %v", req.MessageType(), rep.Summary())
		}
		return nil
	}
	if rep == nil {
		t.Fatalf("%v: want %v, got no reply (err %v)", req.MessageType(), want, err)
	}
	if got := rep.MessageType(); got != want {
		t.Fatalf("%v: want %v, got %v (%s)", req.MessageType(), want, got, rep.Message())
	}
	if rep.OpCode != dhcpv4.OpcodeBootReply || rep.TransactionID != req.TransactionID {
		t.Fatalf("reply op %v xid %v, request xid %v", rep.OpCode, rep.TransactionID, req.TransactionID)
	}
	if sid := rep.ServerIdentifier(); sid == nil || addrOf(t, sid) != s.cfg.ServerIP {
		t.Fatalf("reply server id %v, want %v", sid, s.cfg.ServerIP)
	}
	return rep
}

// obtain runs DISCOVER, OFFER, REQUEST, ACK and returns the bound address.
func obtain(t testing.TB, s *Server, hw net.HardwareAddr, now time.Time) netip.Addr {
	t.Helper()
	offer := handle(t, s, discoverMsg(t, hw), now, dhcpv4.MessageTypeOffer)
	ip := addrOf(t, offer.YourIPAddr)
	ack := handle(t, s, requestMsg(t, hw, netip.Addr{}, ip, s.cfg.ServerIP), now, dhcpv4.MessageTypeAck)
	if got := addrOf(t, ack.YourIPAddr); got != ip {
		t.Fatalf("ACK yiaddr %v, offered %v", got, ip)
	}
	return ip
}

func leaseOf(s *Server, hw net.HardwareAddr) (Lease, bool) {
	for _, l := range s.Leases() {
		if l.MAC.String() == hw.String() {
			return l, true
		}
	}
	return Lease{}, false
}

// checkInvariants asserts what must hold after any input: one live address
// per MAC, no live address that its MAC may not have.
func checkInvariants(t testing.TB, s *Server, now time.Time) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[macKey]netip.Addr{}
	for ip, r := range s.recs {
		if r.ip != ip {
			t.Fatalf("record for %v filed under %v", r.ip, ip)
		}
		if !s.assignable(ip) {
			t.Fatalf("record for unassignable address %v (%s)", ip, r.state)
		}
		if !r.active(now) || r.state == StateDeclined {
			continue
		}
		if other, dup := seen[r.mac]; dup {
			t.Fatalf("MAC %v holds %v and %v", r.mac, other, ip)
		}
		seen[r.mac] = ip
		if !s.usableFor(r.mac, ip, now) {
			t.Fatalf("MAC %v holds %v which it may not have", r.mac, ip)
		}
	}
}
