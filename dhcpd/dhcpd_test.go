package dhcpd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// syncBuffer is a log sink that tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var ip = netip.MustParseAddr

func TestValidate(t *testing.T) {
	if err := testConfig(t).Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"no network", func(c *Config) { c.Network = "" }, "network name is empty"},
		{"network with slash", func(c *Config) { c.Network = "a/b" }, "cannot be used in a file name"},
		{"no interface", func(c *Config) { c.Interface = "" }, "interface is empty"},
		{"no state dir", func(c *Config) { c.StateDir = "" }, "state directory is empty"},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") }, "not an IPv4 prefix"},
		{"tiny subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.77.0.0/31") }, "too small"},
		{"server outside", func(c *Config) { c.ServerIP = ip("10.78.0.1") }, "server IP 10.78.0.1 is outside subnet"},
		{"server is broadcast", func(c *Config) { c.ServerIP = ip("10.77.0.255") }, "network or broadcast"},
		{"start outside", func(c *Config) { c.RangeStart = ip("10.77.1.10") }, "range start 10.77.1.10 is outside"},
		{"end outside", func(c *Config) { c.RangeEnd = ip("10.76.0.20") }, "range end 10.76.0.20 is outside"},
		{"start after end", func(c *Config) { c.RangeStart, c.RangeEnd = ip("10.77.0.30"), ip("10.77.0.20") }, "is after range end"},
		{"range only gateway", func(c *Config) { c.RangeStart, c.RangeEnd = testServerIP, testServerIP }, "no address besides the gateway"},
		{"router outside", func(c *Config) { c.Router = ip("10.78.0.1") }, "router 10.78.0.1 is outside"},
		{"bad dns", func(c *Config) { c.DNS = []netip.Addr{ip("::1")} }, "DNS server #1"},
		{"bad mtu", func(c *Config) { c.MTU = 20 }, "MTU 20"},
		{"negative lease", func(c *Config) { c.LeaseTime = -time.Second }, "negative"},
		{"sub-second lease", func(c *Config) { c.LeaseTime = time.Millisecond }, "shorter than one second"},
		{"reservation outside", func(c *Config) {
			c.Reservations = []Reservation{{MAC: mac(1), IP: ip("10.78.0.5")}}
		}, "reservation #1 (52:54:00:12:34:01): IP 10.78.0.5 is outside"},
		{"reservation is server", func(c *Config) {
			c.Reservations = []Reservation{{MAC: mac(1), IP: testServerIP}}
		}, "is the server IP"},
		{"reservation dup mac", func(c *Config) {
			c.Reservations = []Reservation{{MAC: mac(1), IP: ip("10.77.0.50")}, {MAC: mac(1), IP: ip("10.77.0.51")}}
		}, "already reserved by reservation #1"},
		{"reservation dup ip", func(c *Config) {
			c.Reservations = []Reservation{{MAC: mac(1), IP: ip("10.77.0.50")}, {MAC: mac(2), IP: ip("10.77.0.50")}}
		}, "IP 10.77.0.50 is already reserved"},
		{"reservation bad mac", func(c *Config) {
			c.Reservations = []Reservation{{MAC: net.HardwareAddr{1, 2, 3}, IP: ip("10.77.0.50")}}
		}, "not a 6-byte Ethernet address"},
		{"reservation bad hostname", func(c *Config) {
			c.Reservations = []Reservation{{MAC: mac(1), IP: ip("10.77.0.50"), Hostname: "a b"}}
		}, "not a valid host name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t)
			tc.mod(&c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("config accepted, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if _, err := New(c); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestOfferAndAckOptions(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	req := discoverMsg(t, mac(1))
	offer := handle(t, s, req, now, dhcpv4.MessageTypeOffer)
	yi := addrOf(t, offer.YourIPAddr)
	if yi != ip("10.77.0.10") {
		t.Fatalf("first offer %v, want range start", yi)
	}
	if offer.ClientHWAddr.String() != mac(1).String() {
		t.Fatalf("chaddr %v", offer.ClientHWAddr)
	}
	ack := handle(t, s, requestMsg(t, mac(1), netip.Addr{}, yi, testServerIP), now, dhcpv4.MessageTypeAck)
	for _, rep := range []*dhcpv4.DHCPv4{offer, ack} {
		if got := net.IP(rep.SubnetMask()).String(); got != "255.255.255.0" {
			t.Errorf("%v subnet mask %v", rep.MessageType(), got)
		}
		if r := rep.Router(); len(r) != 1 || !r[0].Equal(testServerIP.AsSlice()) {
			t.Errorf("%v router %v, want the server IP", rep.MessageType(), r)
		}
		if d := rep.DNS(); len(d) != 2 || d[0].String() != "10.77.0.53" || d[1].String() != "10.77.0.54" {
			t.Errorf("%v DNS %v", rep.MessageType(), d)
		}
		if rep.DomainName() != "xdp.test" {
			t.Errorf("%v domain %q", rep.MessageType(), rep.DomainName())
		}
		if mtu := rep.Options.Get(dhcpv4.OptionInterfaceMTU); len(mtu) != 2 || int(mtu[0])<<8|int(mtu[1]) != 1450 {
			t.Errorf("%v MTU option %v", rep.MessageType(), mtu)
		}
		if lt := rep.IPAddressLeaseTime(0); lt != time.Hour {
			t.Errorf("%v lease time %v", rep.MessageType(), lt)
		}
		if t1, t2 := rep.IPAddressRenewalTime(0), rep.IPAddressRebindingTime(0); t1 != 30*time.Minute || t2 != 52*time.Minute+30*time.Second {
			t.Errorf("%v T1 %v T2 %v", rep.MessageType(), t1, t2)
		}
		if b := rep.BroadcastAddress(); b.String() != "10.77.0.255" {
			t.Errorf("%v broadcast %v", rep.MessageType(), b)
		}
	}
	l, ok := leaseOf(s, mac(1))
	if !ok || l.IP != yi || l.State != StateBound || !l.Expiry.Equal(now.Add(time.Hour)) {
		t.Fatalf("lease %+v", l)
	}
}

// TestLongLeaseTimers: T1 and T2 stay below the lease time for the
// longest lease the config allows (RFC 2131 §4.4.5).
func TestLongLeaseTimers(t *testing.T) {
	cfg := testConfig(t)
	cfg.LeaseTime = 0xfffffffe * time.Second
	s := newServer(t, cfg)
	offer := handle(t, s, discoverMsg(t, mac(1)), time.Now(), dhcpv4.MessageTypeOffer)
	lt, t1, t2 := offer.IPAddressLeaseTime(0), offer.IPAddressRenewalTime(0), offer.IPAddressRebindingTime(0)
	if want2 := (lt - lt/8).Truncate(time.Second); lt != cfg.LeaseTime || t1 != (lt/2).Truncate(time.Second) || t2 != want2 {
		t.Errorf("lease %v, T1 %v, T2 %v; want %v, %v, %v", lt, t1, t2, cfg.LeaseTime, (lt / 2).Truncate(time.Second), want2)
	}
}

func TestMTUOmittedWhenZero(t *testing.T) {
	cfg := testConfig(t)
	cfg.MTU, cfg.Domain, cfg.DNS = 0, "", nil
	s := newServer(t, cfg)
	offer := handle(t, s, discoverMsg(t, mac(1)), time.Now(), dhcpv4.MessageTypeOffer)
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionInterfaceMTU, dhcpv4.OptionDomainName, dhcpv4.OptionDomainNameServer} {
		if offer.Options.Has(code) {
			t.Errorf("option %v present though not configured", code)
		}
	}
}

func TestDistinctAddressesAndStability(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	a := obtain(t, s, mac(1), now)
	b := obtain(t, s, mac(2), now)
	if a == b {
		t.Fatalf("two clients share %v", a)
	}
	// A client that comes back (reboot, lost state) gets its address again.
	if again := obtain(t, s, mac(1), now.Add(time.Minute)); again != a {
		t.Fatalf("client 1 moved from %v to %v", a, again)
	}
	// Asking for another client's address does not get it.
	offer := handle(t, s, discoverMsg(t, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(b.AsSlice()))), now, dhcpv4.MessageTypeOffer)
	if got := addrOf(t, offer.YourIPAddr); got == a || got == b {
		t.Fatalf("client 3 offered a taken address %v", got)
	}
	// Asking for a free address does.
	want := ip("10.77.0.19")
	offer = handle(t, s, discoverMsg(t, mac(4), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want.AsSlice()))), now, dhcpv4.MessageTypeOffer)
	if got := addrOf(t, offer.YourIPAddr); got != want {
		t.Fatalf("client 4 asked for %v, offered %v", want, got)
	}
	checkInvariants(t, s, now)
	if len(s.Leases()) != 4 {
		t.Fatalf("leases %+v", s.Leases())
	}
}

func TestReservation(t *testing.T) {
	cfg := testConfig(t)
	resIn, resOut := ip("10.77.0.10"), ip("10.77.0.100")
	cfg.Reservations = []Reservation{
		{MAC: mac(1), IP: resOut, Hostname: "db1"}, // outside the range
		{MAC: mac(2), IP: resIn},                   // inside it
	}
	s := newServer(t, cfg)
	now := time.Now()

	// Another client never gets a reserved address, asked for or not.
	for i, req := range []*dhcpv4.DHCPv4{
		discoverMsg(t, mac(3)),
		discoverMsg(t, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(resIn.AsSlice()))),
		discoverMsg(t, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(resOut.AsSlice()))),
	} {
		offer := handle(t, s, req, now, dhcpv4.MessageTypeOffer)
		if got := addrOf(t, offer.YourIPAddr); got == resIn || got == resOut {
			t.Fatalf("case %d: other client offered reserved %v", i, got)
		}
	}
	handle(t, s, requestMsg(t, mac(3), netip.Addr{}, resIn, netip.Addr{}), now, dhcpv4.MessageTypeNak)
	handle(t, s, requestMsg(t, mac(3), netip.Addr{}, resIn, testServerIP), now, dhcpv4.MessageTypeNak)
	handle(t, s, requestMsg(t, mac(3), resOut, netip.Addr{}, netip.Addr{}), now, dhcpv4.MessageTypeNak)

	// The reserved MACs get theirs, also when asking for something else.
	if got := obtain(t, s, mac(1), now); got != resOut {
		t.Fatalf("mac 1 got %v, want %v", got, resOut)
	}
	offer := handle(t, s, discoverMsg(t, mac(2), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip("10.77.0.15").AsSlice()))), now, dhcpv4.MessageTypeOffer)
	if got := addrOf(t, offer.YourIPAddr); got != resIn {
		t.Fatalf("mac 2 offered %v, want %v", got, resIn)
	}
	handle(t, s, requestMsg(t, mac(2), netip.Addr{}, ip("10.77.0.15"), netip.Addr{}), now, dhcpv4.MessageTypeNak)

	// The reservation's hostname goes out as option 12.
	ack := handle(t, s, requestMsg(t, mac(1), resOut, netip.Addr{}, netip.Addr{}), now, dhcpv4.MessageTypeAck)
	if ack.HostName() != "db1" {
		t.Fatalf("hostname %q, want db1", ack.HostName())
	}
	if l, _ := leaseOf(s, mac(1)); l.Hostname != "db1" {
		t.Fatalf("lease hostname %q", l.Hostname)
	}
	checkInvariants(t, s, now)
}

func TestReleaseFrees(t *testing.T) {
	cfg := testConfig(t)
	cfg.RangeEnd = cfg.RangeStart // a single address makes "freed" observable
	s := newServer(t, cfg)
	now := time.Now()
	a := obtain(t, s, mac(1), now)
	handle(t, s, discoverMsg(t, mac(2)), now, dhcpv4.MessageTypeNone)

	// A RELEASE from someone else, or for another address, changes nothing.
	handle(t, s, releaseMsg(t, mac(2), a), now, dhcpv4.MessageTypeNone)
	handle(t, s, releaseMsg(t, mac(1), ip("10.77.0.11")), now, dhcpv4.MessageTypeNone)
	if _, ok := leaseOf(s, mac(1)); !ok {
		t.Fatal("lease gone after a foreign RELEASE")
	}

	handle(t, s, releaseMsg(t, mac(1), a), now, dhcpv4.MessageTypeNone)
	if ls := s.Leases(); len(ls) != 0 {
		t.Fatalf("leases after release: %+v", ls)
	}
	if got := obtain(t, s, mac(2), now); got != a {
		t.Fatalf("mac 2 got %v, want the released %v", got, a)
	}
	if c := s.Counters(); c.Release != 3 || c.PoolExhausted != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestReleasedAddressGoesBackToItsClient(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	a := obtain(t, s, mac(1), now)
	handle(t, s, releaseMsg(t, mac(1), a), now, dhcpv4.MessageTypeNone)
	b := obtain(t, s, mac(2), now) // prefers a never used address
	if b == a {
		t.Fatalf("released address %v given to another client while others are free", a)
	}
	if again := obtain(t, s, mac(1), now); again != a {
		t.Fatalf("client got %v back, want its previous %v", again, a)
	}
}

func TestDecline(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	a := obtain(t, s, mac(1), now)

	// Declining an address one does not hold is ignored.
	handle(t, s, declineMsg(t, mac(2), a), now, dhcpv4.MessageTypeNone)
	if l, _ := leaseOf(s, mac(1)); l.State != StateBound {
		t.Fatalf("foreign DECLINE changed the lease: %+v", l)
	}

	handle(t, s, declineMsg(t, mac(1), a), now, dhcpv4.MessageTypeNone)
	ls := s.Leases()
	if len(ls) != 1 || ls[0].IP != a || ls[0].State != StateDeclined {
		t.Fatalf("leases after decline: %+v", ls)
	}
	// Neither the decliner nor anyone else gets it while it is held.
	if b := obtain(t, s, mac(1), now); b == a {
		t.Fatalf("declined address %v offered again", a)
	}
	handle(t, s, requestMsg(t, mac(2), netip.Addr{}, a, netip.Addr{}), now, dhcpv4.MessageTypeNak)
	// After the hold it is an address like any other.
	later := now.Add(declineHold + time.Second)
	offer := handle(t, s, discoverMsg(t, mac(3), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.AsSlice()))), later, dhcpv4.MessageTypeOffer)
	if got := addrOf(t, offer.YourIPAddr); got != a {
		t.Fatalf("after the hold, offered %v, want %v", got, a)
	}
	if c := s.Counters(); c.Decline != 2 {
		t.Fatalf("decline counter %d", c.Decline)
	}
	checkInvariants(t, s, later)
}

func TestInitRebootAndRenew(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	a := obtain(t, s, mac(1), now)
	b := obtain(t, s, mac(2), now)

	// INIT-REBOOT: own address ACKed, wrong subnet or someone else's NAKed.
	ack := handle(t, s, requestMsg(t, mac(1), netip.Addr{}, a, netip.Addr{}), now, dhcpv4.MessageTypeAck)
	if addrOf(t, ack.YourIPAddr) != a {
		t.Fatalf("INIT-REBOOT ACK yiaddr %v", ack.YourIPAddr)
	}
	nak := handle(t, s, requestMsg(t, mac(1), netip.Addr{}, ip("192.168.1.5"), netip.Addr{}), now, dhcpv4.MessageTypeNak)
	if !addrOf(t, nak.YourIPAddr).IsUnspecified() || nak.IPAddressLeaseTime(0) != 0 || nak.Router() != nil {
		t.Fatalf("NAK carries configuration: %s", nak.Summary())
	}
	handle(t, s, requestMsg(t, mac(1), netip.Addr{}, b, netip.Addr{}), now, dhcpv4.MessageTypeNak)
	handle(t, s, requestMsg(t, mac(1), netip.Addr{}, ip("10.77.0.18"), netip.Addr{}), now, dhcpv4.MessageTypeNak) // holds a
	handle(t, s, requestMsg(t, mac(1), netip.Addr{}, testServerIP, netip.Addr{}), now, dhcpv4.MessageTypeNak)

	// RENEWING: ciaddr set, ACK extends the lease and goes to ciaddr.
	later := now.Add(40 * time.Minute)
	req := requestMsg(t, mac(1), a, netip.Addr{}, netip.Addr{})
	ack = handle(t, s, req, later, dhcpv4.MessageTypeAck)
	if addrOf(t, ack.YourIPAddr) != a || addrOf(t, ack.ClientIPAddr) != a {
		t.Fatalf("renew ACK yiaddr %v ciaddr %v", ack.YourIPAddr, ack.ClientIPAddr)
	}
	if l, _ := leaseOf(s, mac(1)); !l.Expiry.Equal(later.Add(time.Hour)) {
		t.Fatalf("renewed expiry %v, want %v", l.Expiry, later.Add(time.Hour))
	}
	if _, dst := s.handlePacket(req.ToBytes(), later); dst != a {
		t.Fatalf("renew ACK sent to %v, want unicast to %v", dst, a)
	}
	// Renewing someone else's address is refused, and a NAK is broadcast.
	nakBytes, dst := s.handlePacket(requestMsg(t, mac(1), b, netip.Addr{}, netip.Addr{}).ToBytes(), later)
	if nakBytes == nil || dst != broadcastIP {
		t.Fatalf("NAK to %v (%d bytes), want broadcast", dst, len(nakBytes))
	}
	// A REQUEST naming no address at all is dropped.
	handle(t, s, requestMsg(t, mac(1), netip.Addr{}, netip.Addr{}, netip.Addr{}), later, dhcpv4.MessageTypeNone)
	checkInvariants(t, s, later)
}

func TestSelectingOtherServerIgnored(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	offer := handle(t, s, discoverMsg(t, mac(1)), now, dhcpv4.MessageTypeOffer)
	a := addrOf(t, offer.YourIPAddr)
	if l, ok := leaseOf(s, mac(1)); !ok || l.State != StateOffered || l.Expiry.After(now.Add(time.Minute)) {
		t.Fatalf("offer not held briefly: %+v", l)
	}
	handle(t, s, requestMsg(t, mac(1), netip.Addr{}, a, ip("10.77.0.2")), now, dhcpv4.MessageTypeNone)
	if _, ok := leaseOf(s, mac(1)); ok {
		t.Fatal("offer still held after the client chose another server")
	}
	if c := s.Counters(); c.Ack != 0 || c.Nak != 0 || c.Request != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestInform(t *testing.T) {
	s := newServer(t, testConfig(t))
	client := ip("10.77.0.99") // configured statically on the client
	req := informMsg(t, mac(1), client)
	ack := handle(t, s, req, time.Now(), dhcpv4.MessageTypeAck)
	if !addrOf(t, ack.YourIPAddr).IsUnspecified() {
		t.Fatalf("INFORM ACK yiaddr %v", ack.YourIPAddr)
	}
	if addrOf(t, ack.ClientIPAddr) != client {
		t.Fatalf("INFORM ACK ciaddr %v", ack.ClientIPAddr)
	}
	if ack.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || ack.Options.Has(dhcpv4.OptionRenewTimeValue) {
		t.Fatal("INFORM ACK carries lease times")
	}
	if len(ack.DNS()) != 2 || len(ack.Router()) != 1 || ack.DomainName() != "xdp.test" {
		t.Fatalf("INFORM ACK lacks configuration: %s", ack.Summary())
	}
	if _, dst := s.handlePacket(req.ToBytes(), time.Now()); dst != client {
		t.Fatalf("INFORM ACK to %v, want %v", dst, client)
	}
	if len(s.Leases()) != 0 {
		t.Fatalf("INFORM created a lease: %+v", s.Leases())
	}
	if c := s.Counters(); c.Inform != 2 || c.Ack != 2 {
		t.Fatalf("counters %+v", c)
	}
}

func TestPoolExhaustion(t *testing.T) {
	cfg := testConfig(t)
	cfg.RangeEnd = ip("10.77.0.11")
	var logBuf syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	s := newServer(t, cfg)
	now := time.Now()
	a, b := obtain(t, s, mac(1), now), obtain(t, s, mac(2), now)
	for range 3 {
		rep, err := s.Handle(discoverMsg(t, mac(3)), now)
		if rep != nil || !errors.Is(err, ErrPoolExhausted) {
			t.Fatalf("third client: reply %v err %v, want no offer", rep, err)
		}
	}
	if c := s.Counters(); c.PoolExhausted != 3 || c.Offer != 2 || c.Discover != 5 {
		t.Fatalf("counters %+v", c)
	}
	// Retrying clients do not flood the log.
	if n := strings.Count(logBuf.String(), "pool exhausted"); n != 1 {
		t.Fatalf("%d log lines about exhaustion, want 1:\n%s", n, logBuf.String())
	}
	// The two clients keep working.
	handle(t, s, requestMsg(t, mac(1), a, netip.Addr{}, netip.Addr{}), now, dhcpv4.MessageTypeAck)
	handle(t, s, requestMsg(t, mac(2), b, netip.Addr{}, netip.Addr{}), now, dhcpv4.MessageTypeAck)
}

func TestNeverServerOrRouterIP(t *testing.T) {
	cfg := testConfig(t)
	cfg.ServerIP, cfg.Router = ip("10.77.0.10"), ip("10.77.0.11")
	cfg.RangeEnd = ip("10.77.0.12")
	s := newServer(t, cfg)
	now := time.Now()
	// Asking for the server's address gets something else.
	offer := handle(t, s, discoverMsg(t, mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(cfg.ServerIP.AsSlice()))), now, dhcpv4.MessageTypeOffer)
	if got := addrOf(t, offer.YourIPAddr); got != ip("10.77.0.12") {
		t.Fatalf("offered %v, want the only free address", got)
	}
	if r := offer.Router(); len(r) != 1 || r[0].String() != "10.77.0.11" {
		t.Fatalf("router option %v", r)
	}
	handle(t, s, discoverMsg(t, mac(2)), now, dhcpv4.MessageTypeNone)
	handle(t, s, requestMsg(t, mac(2), netip.Addr{}, cfg.ServerIP, netip.Addr{}), now, dhcpv4.MessageTypeNak)
	handle(t, s, requestMsg(t, mac(2), netip.Addr{}, cfg.Router, cfg.ServerIP), now, dhcpv4.MessageTypeNak)
}

func TestExpiredLeaseReusable(t *testing.T) {
	cfg := testConfig(t)
	cfg.RangeEnd = cfg.RangeStart
	s := newServer(t, cfg)
	now := time.Now()
	a := obtain(t, s, mac(1), now)
	handle(t, s, discoverMsg(t, mac(2)), now.Add(59*time.Minute), dhcpv4.MessageTypeNone)
	// An offer not followed by a REQUEST lapses too.
	later := now.Add(time.Hour + time.Second)
	handle(t, s, discoverMsg(t, mac(3)), later, dhcpv4.MessageTypeOffer)
	if got := obtain(t, s, mac(2), later.Add(offerHold+time.Second)); got != a {
		t.Fatalf("got %v, want the expired %v", got, a)
	}
	// The old holder, back too late, is refused its former address.
	handle(t, s, requestMsg(t, mac(1), a, netip.Addr{}, netip.Addr{}), later.Add(time.Minute), dhcpv4.MessageTypeNak)
}

func TestPersistence(t *testing.T) {
	cfg := testConfig(t)
	cfg.Reservations = []Reservation{{MAC: mac(9), IP: ip("10.77.0.90")}}
	s := newServer(t, cfg)
	now := time.Now()
	a := obtain(t, s, mac(1), now)
	b := obtain(t, s, mac(2), now)
	c := obtain(t, s, mac(3), now)
	r := obtain(t, s, mac(9), now)
	handle(t, s, declineMsg(t, mac(3), c), now, dhcpv4.MessageTypeNone)
	handle(t, s, releaseMsg(t, mac(2), b), now, dhcpv4.MessageTypeNone)
	handle(t, s, discoverMsg(t, mac(4)), now, dhcpv4.MessageTypeOffer) // offers are not persisted
	// A lease granted in the past that has run out by now is dropped on load.
	old := obtain(t, s, mac(5), now.Add(-2*time.Hour))
	s.Close()

	path := filepath.Join(cfg.StateDir, "leases-testnet.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f leaseFile
	if err := json.Unmarshal(data, &f); err != nil || f.Version != 1 {
		t.Fatalf("lease file: %v\n%s", err, data)
	}
	entries, _ := os.ReadDir(cfg.StateDir)
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d entries, want only the lease file (no temp files)", len(entries))
	}

	s2 := newServer(t, cfg)
	got := map[string]Lease{}
	for _, l := range s2.Leases() {
		got[l.MAC.String()] = l
	}
	if l := got[mac(1).String()]; l.IP != a || l.State != StateBound || !l.Expiry.Equal(now.Add(time.Hour)) {
		t.Fatalf("mac 1 lease after restart: %+v", l)
	}
	if l := got[mac(3).String()]; l.IP != c || l.State != StateDeclined {
		t.Fatalf("declined lease after restart: %+v", l)
	}
	if l := got[mac(9).String()]; l.IP != r {
		t.Fatalf("reserved lease after restart: %+v", l)
	}
	for _, m := range []net.HardwareAddr{mac(2), mac(4), mac(5)} {
		if l, ok := got[m.String()]; ok {
			t.Fatalf("lease of %v survived restart: %+v", m, l)
		}
	}
	if len(got) != 3 {
		t.Fatalf("leases after restart: %+v", s2.Leases())
	}
	// The restarted server still gives the client its address.
	if again := obtain(t, s2, mac(1), now.Add(time.Minute)); again != a {
		t.Fatalf("after restart got %v, want %v", again, a)
	}
	// The expired one's address is free for anyone.
	offer := handle(t, s2, discoverMsg(t, mac(6), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(old.AsSlice()))), now, dhcpv4.MessageTypeOffer)
	if addrOf(t, offer.YourIPAddr) != old {
		t.Fatalf("expired address %v not offered, got %v", old, offer.YourIPAddr)
	}
}

func TestLoadDropsLeasesTheConfigNoLongerAllows(t *testing.T) {
	cfg := testConfig(t)
	s := newServer(t, cfg)
	now := time.Now()
	a := obtain(t, s, mac(1), now)
	b := obtain(t, s, mac(2), now)
	s.Close()

	if a != ip("10.77.0.10") || b != ip("10.77.0.11") {
		t.Fatalf("got %v and %v, want the first two of the range", a, b)
	}
	// The range no longer holds b, and a is now reserved for another MAC.
	cfg.RangeStart = ip("10.77.0.12")
	cfg.Reservations = []Reservation{{MAC: mac(7), IP: a}}
	s2 := newServer(t, cfg)
	if ls := s2.Leases(); len(ls) != 0 {
		t.Fatalf("leases kept against the new config: %+v", ls)
	}
}

func TestCorruptLeaseFile(t *testing.T) {
	cfg := testConfig(t)
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "leases-testnet.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(cfg)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("New on a corrupt lease file: %v", err)
	}
}

func TestMalformedCounted(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	good := discoverMsg(t, mac(1))

	noType := discoverMsg(t, mac(1))
	noType.Options.Del(dhcpv4.OptionDHCPMessageType)
	reply := discoverMsg(t, mac(1))
	reply.OpCode = dhcpv4.OpcodeBootReply
	notEther := discoverMsg(t, mac(1))
	notEther.HWType = iana.HWTypeIEEE802
	longHW := discoverMsg(t, append(mac(1), 1, 2))
	mcast := discoverMsg(t, net.HardwareAddr{1, 0, 0x5e, 0, 0, 1})
	badOpt := discoverMsg(t, mac(1), dhcpv4.WithGeneric(dhcpv4.OptionRequestedIPAddress, []byte{10, 77}))
	twoTypes := discoverMsg(t, mac(1), dhcpv4.WithGeneric(dhcpv4.OptionDHCPMessageType, []byte{1, 3}))

	inputs := [][]byte{
		nil,
		[]byte("hello"),
		good.ToBytes()[:100], // truncated header
		append(good.ToBytes()[:236], 1, 2, 3, 4, 53, 1, 1, 255), // bad magic cookie
		noType.ToBytes(),
		reply.ToBytes(),
		notEther.ToBytes(),
		longHW.ToBytes(),
		mcast.ToBytes(),
		badOpt.ToBytes(),
		twoTypes.ToBytes(),
	}
	for i, b := range inputs {
		if rep := s.HandleBytes(b, now); rep != nil {
			t.Fatalf("input %d answered", i)
		}
	}
	if c := s.Counters(); c.Malformed != uint64(len(inputs)) || c.Discover != 0 {
		t.Fatalf("counters %+v, want %d malformed", c, len(inputs))
	}
	if rep, err := s.Handle(nil, now); rep != nil || !errors.Is(err, ErrMalformed) {
		t.Fatalf("nil message: %v %v", rep, err)
	}
	// Still serving.
	if rep := s.HandleBytes(good.ToBytes(), now); rep == nil {
		t.Fatal("no offer after malformed input")
	}
}

func TestDroppedCounted(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	relayed := discoverMsg(t, mac(1), dhcpv4.WithRelay(net.IPv4(10, 1, 2, 3)))
	offerFromClient := discoverMsg(t, mac(1), dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer))
	for _, m := range []*dhcpv4.DHCPv4{relayed, offerFromClient} {
		handle(t, s, m, now, dhcpv4.MessageTypeNone)
	}
	if c := s.Counters(); c.Dropped != 2 || c.Malformed != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newServer(t, testConfig(t))
	now := time.Now()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hw := mac(byte(i))
			for range 20 {
				rep, _ := s.Handle(discoverMsg(t, hw), now)
				if rep == nil {
					continue
				}
				s.Handle(requestMsg(t, hw, netip.Addr{}, addrOf(t, rep.YourIPAddr), testServerIP), now)
				_ = s.Leases()
				_ = s.Counters()
			}
		}()
	}
	wg.Wait()
	checkInvariants(t, s, now)
	if n := len(s.Leases()); n != 8 {
		t.Fatalf("%d leases for 8 clients", n)
	}
}

func TestServeLifecycle(t *testing.T) {
	ns := testnet.NewNS(t)
	cfg := testConfig(t)
	cfg.Interface = "nosuchdev0"
	s := newServer(t, cfg)
	err := ns.Do(func() error { return s.Serve(context.Background()) })
	if err == nil || !strings.Contains(err.Error(), "nosuchdev0") {
		t.Fatalf("Serve on a missing interface: %v", err)
	}

	listen := func() net.PacketConn {
		var c net.PacketConn
		if err := ns.Do(func() (err error) {
			c, err = net.ListenPacket("udp4", "127.0.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Cancel ends Serve with nil; a second Serve meanwhile is refused.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	conn := listen()
	serving := func() bool {
		s.connMu.Lock()
		defer s.connMu.Unlock()
		return s.conn != nil
	}
	go func() { done <- s.ServeConn(ctx, conn) }()
	testnet.Eventually(t, 5*time.Second, "Serve to start", serving)
	if err := s.ServeConn(context.Background(), listen()); err == nil || !strings.Contains(err.Error(), "already serving") {
		t.Fatalf("second Serve: %v, want already serving", err)
	}
	// It reads and handles what arrives on the conn it was given.
	client := listen()
	defer client.Close()
	if _, err := client.WriteTo(informMsg(t, mac(1), ip("10.77.0.99")).ToBytes(), conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, "the INFORM to be handled", func() bool { return s.Counters().Inform == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}

	// Close ends Serve with nil too, and later Serve calls fail.
	go func() { done <- s.ServeConn(context.Background(), listen()) }()
	testnet.Eventually(t, 5*time.Second, "Serve to start", serving)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if err := s.ServeConn(context.Background(), listen()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v, want ErrClosed", err)
	}
}

// FuzzHandleBytes feeds arbitrary payloads through the path Serve uses: it
// must never panic, and whatever it answers must be a sane reply that keeps
// the lease table consistent.
func FuzzHandleBytes(f *testing.F) {
	seedMAC := mac(1)
	a := ip("10.77.0.10")
	for _, m := range []*dhcpv4.DHCPv4{
		discoverMsg(f, seedMAC),
		discoverMsg(f, seedMAC, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.AsSlice())), dhcpv4.WithOption(dhcpv4.OptHostName("vm1"))),
		requestMsg(f, seedMAC, netip.Addr{}, a, testServerIP),
		requestMsg(f, seedMAC, netip.Addr{}, a, netip.Addr{}),
		requestMsg(f, seedMAC, a, netip.Addr{}, netip.Addr{}),
		releaseMsg(f, seedMAC, a),
		declineMsg(f, seedMAC, a),
		informMsg(f, seedMAC, a),
	} {
		f.Add(m.ToBytes())
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 6, 0})

	cfg := testConfig(f)
	cfg.Logger = discardLogger // the fuzzer's millions of inputs would flood the log
	cfg.RangeEnd = ip("10.77.0.13")
	cfg.Reservations = []Reservation{{MAC: mac(2), IP: ip("10.77.0.100"), Hostname: "r"}}
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	// The clock moves forward by a little per input so that offers and
	// leases expire along the way (inputs run one at a time per process).
	now := time.Now()
	f.Fuzz(func(t *testing.T, b []byte) {
		now = now.Add(time.Duration(len(b)) * time.Second)
		out, dst := s.handlePacket(b, now)
		if out == nil {
			return
		}
		if !dst.IsValid() {
			t.Fatal("reply without destination")
		}
		rep, err := dhcpv4.FromBytes(out)
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if rep.OpCode != dhcpv4.OpcodeBootReply {
			t.Fatalf("reply op %v", rep.OpCode)
		}
		if yi := addrOf(t, rep.YourIPAddr); !yi.IsUnspecified() && !s.assignable(yi) {
			t.Fatalf("handed out %v", yi)
		}
		checkInvariants(t, s, now)
	})
}

// repliesConn is a PacketConn that serves queued requests and records
// how many lease changes the server had reported when it wrote each
// reply.
type repliesConn struct {
	in      chan []byte
	written chan int32
	changes *atomic.Int32
	once    sync.Once
	done    chan struct{}
}

func (c *repliesConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case m := <-c.in:
		return copy(b, m), &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ClientPort}, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *repliesConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.written <- c.changes.Load()
	return len(b), nil
}

func (c *repliesConn) Close() error                     { c.once.Do(func() { close(c.done) }); return nil }
func (c *repliesConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: testServerIP.AsSlice(), Port: 67} }
func (c *repliesConn) SetDeadline(time.Time) error      { return nil }
func (c *repliesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *repliesConn) SetWriteDeadline(time.Time) error { return nil }

// TestOnLeases checks that Serve reports every change of the bound leases,
// and nothing else, before it answers: port security knows an address
// before the client that asked for it does.
func TestOnLeases(t *testing.T) {
	cfg := testConfig(t)
	var s *Server
	var changes atomic.Int32
	bound := make(chan int, 4) // bound leases as each report saw them
	cfg.OnLeases = func() {
		n := 0
		for _, l := range s.Leases() {
			if l.State == StateBound {
				n++
			}
		}
		changes.Add(1)
		bound <- n
	}
	s = newServer(t, cfg)
	conn := &repliesConn{in: make(chan []byte), written: make(chan int32, 4), changes: &changes, done: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- s.ServeConn(context.Background(), conn) }()
	send := func(m *dhcpv4.DHCPv4) { conn.in <- m.ToBytes() }
	reply := func(what string, wantChanges int32) {
		t.Helper()
		select {
		case n := <-conn.written:
			if n != wantChanges {
				t.Errorf("%s answered after %d lease changes were reported, want %d", what, n, wantChanges)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no answer to the %s", what)
		}
	}
	report := func(what string, wantBound int) {
		t.Helper()
		select {
		case n := <-bound:
			if n != wantBound {
				t.Errorf("after the %s the report saw %d bound leases, want %d", what, n, wantBound)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the %s was not reported", what)
		}
	}

	send(discoverMsg(t, mac(1)))
	reply("DISCOVER", 0)
	offered := netip.MustParseAddr("10.77.0.10")
	send(requestMsg(t, mac(1), netip.Addr{}, offered, testServerIP))
	reply("REQUEST", 1)
	report("REQUEST", 1)
	send(informMsg(t, mac(1), offered))
	reply("INFORM", 1)
	send(releaseMsg(t, mac(1), offered))
	report("RELEASE", 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := changes.Load(); n != 2 {
		t.Errorf("%d lease changes reported, want 2", n)
	}
}
