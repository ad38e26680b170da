package dhcpd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"
)

// DefaultLeaseTime is used when Config.LeaseTime is zero.
const DefaultLeaseTime = time.Hour

// maxLeaseTime keeps the lease time representable in option 51 (seconds,
// uint32) without hitting 0xffffffff, which means "infinite".
const maxLeaseTime = time.Duration(0xfffffffe) * time.Second

// Reservation pins an address to a MAC: that MAC always gets IP, and no other
// MAC ever does.
type Reservation struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string // sent as option 12 when set
}

// Config describes the DHCP service of one network.
type Config struct {
	Network    string       // network name, for logs and the lease file name
	Interface  string       // host-side interface to serve on
	ServerIP   netip.Addr   // the gateway address on that interface (also option 54)
	Subnet     netip.Prefix // e.g. 10.10.0.0/24
	RangeStart netip.Addr   // first address handed out dynamically
	RangeEnd   netip.Addr   // last address handed out dynamically
	Router     netip.Addr   // zero: ServerIP
	DNS        []netip.Addr
	Domain     string
	MTU        int           // 0: option 26 omitted
	LeaseTime  time.Duration // 0: DefaultLeaseTime
	// Reservations may lie outside the range but must be inside Subnet.
	Reservations []Reservation
	StateDir     string // leases persisted as StateDir/leases-<Network>.json
	Logger       *slog.Logger
	// OnLeases, if set, is called after a message that changed the bound
	// leases (an address acknowledged, released or declined), outside
	// the server's lock and before the reply goes out: what enforces the
	// leases (port security) learns of an address before its client can
	// use it.
	OnLeases func()
}

// Validate reports every problem of the configuration at once, so an
// operator fixes them in one go.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	switch {
	case c.Network == "":
		bad("network name is empty")
	case c.Network == "." || c.Network == ".." || strings.ContainsAny(c.Network, "/\x00"):
		bad("network name %q cannot be used in a file name", c.Network)
	}
	switch {
	case c.Interface == "":
		bad("interface is empty")
	case len(c.Interface) > 15 || strings.ContainsAny(c.Interface, "/ \x00"):
		bad("interface name %q is not a valid Linux interface name", c.Interface)
	}
	if c.StateDir == "" {
		bad("state directory is empty (leases must survive a restart)")
	}

	subnetOK := c.Subnet.IsValid() && c.Subnet.Addr().Is4()
	if !subnetOK {
		bad("subnet %v is not an IPv4 prefix", c.Subnet)
	} else if c.Subnet.Bits() > 30 {
		bad("subnet %v is too small to serve DHCP (at most /30)", c.Subnet)
		subnetOK = false
	}
	subnet := c.Subnet.Masked()
	// hostAddr checks that a is a usable host address of the subnet.
	hostAddr := func(what string, a netip.Addr) bool {
		if !a.IsValid() || !a.Is4() {
			bad("%s %v is not an IPv4 address", what, a)
			return false
		}
		if !subnetOK {
			return false
		}
		if !subnet.Contains(a) {
			bad("%s %v is outside subnet %v", what, a, subnet)
			return false
		}
		if a == subnet.Addr() || a == broadcastAddr(subnet) {
			bad("%s %v is the network or broadcast address of %v", what, a, subnet)
			return false
		}
		return true
	}

	serverOK := hostAddr("server IP", c.ServerIP)
	router := c.Router
	if router.IsValid() {
		hostAddr("router", router)
	} else {
		router = c.ServerIP
	}
	startOK := hostAddr("range start", c.RangeStart)
	endOK := hostAddr("range end", c.RangeEnd)
	if startOK && endOK {
		if c.RangeEnd.Less(c.RangeStart) {
			bad("range start %v is after range end %v", c.RangeStart, c.RangeEnd)
		} else if c.RangeStart == c.RangeEnd && (c.RangeStart == c.ServerIP || c.RangeStart == router) {
			bad("range %v-%v holds no address besides the gateway", c.RangeStart, c.RangeEnd)
		}
	}

	for i, d := range c.DNS {
		if !d.IsValid() || !d.Is4() {
			bad("DNS server #%d %v is not an IPv4 address", i+1, d)
		}
	}
	if len(c.Domain) > 253 || strings.ContainsAny(c.Domain, " \x00") {
		bad("domain %q is not a valid domain name", c.Domain)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		bad("MTU %d out of range (0 to omit, else 68..65535)", c.MTU)
	}
	if c.LeaseTime < 0 {
		bad("lease time %v is negative", c.LeaseTime)
	} else if c.LeaseTime != 0 && c.LeaseTime < time.Second {
		bad("lease time %v is shorter than one second", c.LeaseTime)
	} else if c.LeaseTime > maxLeaseTime {
		bad("lease time %v is too long", c.LeaseTime)
	}

	macs := map[string]int{}
	ips := map[netip.Addr]int{}
	for i, r := range c.Reservations {
		what := fmt.Sprintf("reservation #%d (%v)", i+1, r.MAC)
		if len(r.MAC) != 6 {
			bad("%s: MAC %q is not a 6-byte Ethernet address", what, r.MAC.String())
		} else if r.MAC[0]&1 != 0 {
			bad("%s: MAC %v is a multicast address", what, r.MAC)
		} else if j, dup := macs[string(r.MAC)]; dup {
			bad("%s: MAC %v is already reserved by reservation #%d", what, r.MAC, j)
		} else {
			macs[string(r.MAC)] = i + 1
		}
		if hostAddr(what+": IP", r.IP) {
			switch {
			case serverOK && r.IP == c.ServerIP:
				bad("%s: IP %v is the server IP", what, r.IP)
			case r.IP == router:
				bad("%s: IP %v is the router", what, r.IP)
			}
			if j, dup := ips[r.IP]; dup {
				bad("%s: IP %v is already reserved by reservation #%d", what, r.IP, j)
			} else {
				ips[r.IP] = i + 1
			}
		}
		if !validHostname(r.Hostname) {
			bad("%s: hostname %q is not a valid host name", what, r.Hostname)
		}
	}

	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("dhcpd: network %q: invalid config: %w", c.Network, errors.Join(errs...))
}

// validHostname accepts the empty name and RFC 1123 style names; anything
// else would end up verbatim in a guest's configuration.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// broadcastAddr returns the last address of an IPv4 prefix.
func broadcastAddr(p netip.Prefix) netip.Addr {
	a := u32(p.Masked().Addr())
	return addrU32(a | (1<<(32-p.Bits()) - 1))
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addrU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
