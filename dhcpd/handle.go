package dhcpd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	// ErrMalformed marks a request that is not a usable DHCPv4 client message.
	ErrMalformed = errors.New("malformed DHCP request")
	// ErrPoolExhausted marks a DISCOVER that got no offer: no address free.
	ErrPoolExhausted = errors.New("address pool exhausted")
)

var broadcastIP = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// HandleBytes is the raw-packet path Serve uses: one UDP payload in, the
// reply payload out, nil for no reply. It never panics, whatever b holds.
func (s *Server) HandleBytes(b []byte, now time.Time) []byte {
	reply, _ := s.handlePacket(b, now)
	return reply
}

// handlePacket also returns where the reply goes: the client's ciaddr when it
// has one, else the limited broadcast, which reaches a client that has no
// address yet without needing its ARP entry.
func (s *Server) handlePacket(b []byte, now time.Time) ([]byte, netip.Addr) {
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		s.ctr.malformed.Add(1)
		s.log.Debug("dropping unparseable packet", "bytes", len(b), "err", err)
		return nil, netip.Addr{}
	}
	rep, err := s.Handle(req, now)
	if rep == nil {
		if err != nil && !errors.Is(err, ErrPoolExhausted) {
			s.log.Debug("dropping request", "err", err)
		}
		return nil, netip.Addr{}
	}
	dst := broadcastIP
	if ci, ok := v4(rep.ClientIPAddr); ok && ci != netAddrZero && s.cfg.Subnet.Contains(ci) &&
		rep.MessageType() != dhcpv4.MessageTypeNak {
		dst = ci
	}
	return rep.ToBytes(), dst
}

var netAddrZero = netip.IPv4Unspecified()

// msg is the part of a request the state machine looks at, checked once.
type msg struct {
	typ       dhcpv4.MessageType
	mac       macKey
	ciaddr    netip.Addr // 0.0.0.0 when unset
	giaddr    netip.Addr
	requested netip.Addr // option 50, invalid when absent
	serverID  netip.Addr // option 54, invalid when absent
	hostname  string
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// v4 converts a header address; nil counts as 0.0.0.0 because a crafted
// message may leave it unset.
func v4(ip net.IP) (netip.Addr, bool) {
	if len(ip) == 0 {
		return netAddrZero, true
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	return a, a.Is4()
}

func optAddr(req *dhcpv4.DHCPv4, code dhcpv4.OptionCode) (netip.Addr, error) {
	if !req.Options.Has(code) {
		return netip.Addr{}, nil
	}
	v := req.Options.Get(code)
	if len(v) != 4 {
		return netip.Addr{}, malformed("option %v has length %d", code, len(v))
	}
	return netip.AddrFrom4([4]byte(v)), nil
}

func parseMsg(req *dhcpv4.DHCPv4) (*msg, error) {
	if req == nil {
		return nil, malformed("nil message")
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, malformed("op %v is not BOOTREQUEST", req.OpCode)
	}
	if req.HWType != iana.HWTypeEthernet || len(req.ClientHWAddr) != 6 {
		return nil, malformed("hardware type %d length %d is not Ethernet", uint8(req.HWType), len(req.ClientHWAddr))
	}
	m := &msg{typ: req.MessageType(), mac: macKey(req.ClientHWAddr)}
	if m.typ == dhcpv4.MessageTypeNone {
		return nil, malformed("no DHCP message type")
	}
	if m.mac[0]&1 != 0 || m.mac == (macKey{}) {
		return nil, malformed("client MAC %v is not a unicast address", m.mac)
	}
	var ok bool
	if m.ciaddr, ok = v4(req.ClientIPAddr); !ok {
		return nil, malformed("ciaddr is not IPv4")
	}
	if m.giaddr, ok = v4(req.GatewayIPAddr); !ok {
		return nil, malformed("giaddr is not IPv4")
	}
	var err error
	if m.requested, err = optAddr(req, dhcpv4.OptionRequestedIPAddress); err != nil {
		return nil, err
	}
	if m.serverID, err = optAddr(req, dhcpv4.OptionServerIdentifier); err != nil {
		return nil, err
	}
	m.hostname = sanitizeHostname(req.HostName())
	return m, nil
}

// sanitizeHostname keeps what a guest sends in option 12 harmless for logs,
// the lease file and whoever displays leases.
func sanitizeHostname(h string) string {
	b := make([]byte, 0, len(h))
	for _, c := range []byte(h) {
		if len(b) == 63 {
			break
		}
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' {
			b = append(b, c)
		}
	}
	return string(b)
}

// Handle runs one request through the server's state machine and returns the
// reply, nil when none is due. It needs no socket, which is what makes the
// protocol logic testable; now is the clock the lease table uses. The error
// says why a request was refused (ErrMalformed, ErrPoolExhausted, ...).
func (s *Server) Handle(req *dhcpv4.DHCPv4, now time.Time) (*dhcpv4.DHCPv4, error) {
	m, err := parseMsg(req)
	if err != nil {
		s.ctr.malformed.Add(1)
		return nil, err
	}
	if m.giaddr != netAddrZero {
		// Relayed requests come from other links; this server serves one.
		s.ctr.dropped.Add(1)
		return nil, fmt.Errorf("relayed request via %v not served", m.giaddr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m.typ {
	case dhcpv4.MessageTypeDiscover:
		s.ctr.discover.Add(1)
		return s.discover(req, m, now)
	case dhcpv4.MessageTypeRequest:
		s.ctr.request.Add(1)
		return s.request(req, m, now)
	case dhcpv4.MessageTypeDecline:
		s.ctr.decline.Add(1)
		return nil, s.decline(m, now)
	case dhcpv4.MessageTypeRelease:
		s.ctr.release.Add(1)
		return nil, s.releaseLease(m, now)
	case dhcpv4.MessageTypeInform:
		s.ctr.inform.Add(1)
		return s.inform(req, m)
	default:
		s.ctr.dropped.Add(1)
		return nil, fmt.Errorf("message type %v from a client not handled", m.typ)
	}
}

func (s *Server) discover(req *dhcpv4.DHCPv4, m *msg, now time.Time) (*dhcpv4.DHCPv4, error) {
	ip, ok := s.pick(m.mac, m.requested, now)
	if !ok {
		s.ctr.poolExhausted.Add(1)
		s.exhaustQuiet++
		if now.Sub(s.lastExhaust) >= exhaustLogEvery || now.Before(s.lastExhaust) {
			s.log.Warn("address pool exhausted, not offering", "mac", m.mac, "refused", s.exhaustQuiet,
				"range", s.cfg.RangeStart.String()+"-"+s.cfg.RangeEnd.String())
			s.lastExhaust, s.exhaustQuiet = now, 0
		}
		return nil, ErrPoolExhausted
	}
	// A client still bound here (it lost its state) is offered its binding
	// as is; anyone else gets the address held for a short while.
	if r := s.recs[ip]; r == nil || r.mac != m.mac || !r.active(now) || r.state != StateBound {
		s.setLocked(&record{mac: m.mac, ip: ip, hostname: m.hostname, expiry: now.Add(offerHold), state: StateOffered}, now)
	}
	rep, err := s.newReply(req, dhcpv4.MessageTypeOffer, ip, netAddrZero, true)
	if err != nil {
		return nil, err
	}
	s.ctr.offer.Add(1)
	s.log.Debug("offer", "mac", m.mac, "ip", ip)
	return rep, nil
}

func (s *Server) request(req *dhcpv4.DHCPv4, m *msg, now time.Time) (*dhcpv4.DHCPv4, error) {
	var ip netip.Addr
	var state string
	switch {
	case m.serverID.IsValid():
		state = "selecting"
		if m.serverID != s.cfg.ServerIP {
			// The client chose another server's offer: withdraw ours.
			if r := s.currentLocked(m.mac, now); r != nil && r.state == StateOffered {
				r.state, r.expiry = stateFree, now
			}
			return nil, nil
		}
		ip = m.requested
		if !ip.IsValid() {
			ip = m.ciaddr
		}
	case m.ciaddr != netAddrZero:
		state = "renewing" // or rebinding: answered the same way
		ip = m.ciaddr
	case m.requested.IsValid():
		state = "init-reboot"
		ip = m.requested
	default:
		s.ctr.dropped.Add(1)
		return nil, fmt.Errorf("REQUEST from %v names no address", m.mac)
	}
	if ip == netAddrZero {
		s.ctr.dropped.Add(1)
		return nil, fmt.Errorf("REQUEST from %v names no address", m.mac)
	}

	if reason := s.refuse(m.mac, ip, state, now); reason != "" {
		s.log.Info("NAK", "mac", m.mac, "ip", ip, "state", state, "reason", reason)
		rep, err := s.newReply(req, dhcpv4.MessageTypeNak, netAddrZero, netAddrZero, false)
		if err != nil {
			return nil, err
		}
		rep.UpdateOption(dhcpv4.OptMessage(reason))
		s.ctr.nak.Add(1)
		return rep, nil
	}

	hostname := m.hostname
	if res, ok := s.resByMAC[m.mac]; ok && res.Hostname != "" {
		hostname = res.Hostname
	}
	prev := s.recs[ip]
	fresh := prev == nil || prev.mac != m.mac || prev.state != StateBound || !prev.active(now)
	if hostname == "" && prev != nil && prev.mac == m.mac {
		hostname = prev.hostname
	}
	s.setLocked(&record{mac: m.mac, ip: ip, hostname: hostname, expiry: now.Add(s.cfg.LeaseTime), state: StateBound}, now)
	s.changedLocked(now)
	if fresh {
		s.log.Info("lease bound", "mac", m.mac, "ip", ip, "hostname", hostname, "state", state)
	} else {
		s.log.Debug("lease renewed", "mac", m.mac, "ip", ip, "state", state)
	}
	rep, err := s.newReply(req, dhcpv4.MessageTypeAck, ip, m.ciaddr, true)
	if err != nil {
		return nil, err
	}
	s.ctr.ack.Add(1)
	return rep, nil
}

// refuse says why mac may not have ip (empty: it may).
func (s *Server) refuse(mac macKey, ip netip.Addr, state string, now time.Time) string {
	if !s.cfg.Subnet.Contains(ip) {
		return "address not on this network"
	}
	if res, ok := s.resByMAC[mac]; ok && res.IP != ip {
		return "client has a reserved address"
	}
	if state != "selecting" {
		// A client that holds another address here must not grab a second one.
		if cur := s.currentLocked(mac, now); cur != nil && cur.ip != ip && cur.state == StateBound {
			return "client holds another address"
		}
	}
	if !s.usableFor(mac, ip, now) {
		return "address not available"
	}
	return ""
}

func (s *Server) decline(m *msg, now time.Time) error {
	if m.serverID.IsValid() && m.serverID != s.cfg.ServerIP {
		return nil
	}
	ip := m.requested
	r := s.recs[ip]
	if !ip.IsValid() || r == nil || r.mac != m.mac || !r.active(now) || r.state == StateDeclined {
		return fmt.Errorf("DECLINE from %v for %v which it does not hold", m.mac, ip)
	}
	if _, reserved := s.resByIP[ip]; reserved {
		// Nothing else may go to this MAC; keep the reservation and shout.
		s.log.Warn("client declined its reserved address: another host uses it", "mac", m.mac, "ip", ip)
		return nil
	}
	r.state, r.expiry = StateDeclined, now.Add(declineHold)
	delete(s.byMAC, m.mac)
	s.log.Warn("address declined: another host on the network seems to use it", "mac", m.mac, "ip", ip, "held_for", declineHold)
	s.changedLocked(now)
	return nil
}

func (s *Server) releaseLease(m *msg, now time.Time) error {
	if m.serverID.IsValid() && m.serverID != s.cfg.ServerIP {
		return nil
	}
	r := s.recs[m.ciaddr]
	if r == nil || r.mac != m.mac || !r.active(now) || r.state == StateDeclined {
		return fmt.Errorf("RELEASE from %v for %v which it does not hold", m.mac, m.ciaddr)
	}
	// Keep the record (as free) so the client gets this address again.
	r.state, r.expiry = stateFree, now
	s.log.Info("lease released", "mac", m.mac, "ip", m.ciaddr)
	s.changedLocked(now)
	return nil
}

// changedLocked records a change of the bound leases: it persists them
// and counts the change for OnLeases.
func (s *Server) changedLocked(now time.Time) {
	s.changes.Add(1)
	if err := s.persistLocked(now); err != nil {
		// The guests keep working; only a restart could lose the change.
		s.log.Error("persisting leases failed", "file", s.leasePath, "err", err)
	}
}

func (s *Server) inform(req *dhcpv4.DHCPv4, m *msg) (*dhcpv4.DHCPv4, error) {
	rep, err := s.newReply(req, dhcpv4.MessageTypeAck, netAddrZero, m.ciaddr, false)
	if err != nil {
		return nil, err
	}
	s.ctr.ack.Add(1)
	return rep, nil
}

// newReply builds a reply carrying the network's configuration. withLease
// adds the lease times, which an INFORM answer must not carry.
func (s *Server) newReply(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, yiaddr, ciaddr netip.Addr, withLease bool) (*dhcpv4.DHCPv4, error) {
	rep, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(typ))
	if err != nil {
		return nil, fmt.Errorf("build reply: %w", err)
	}
	rep.ClientHWAddr = net.HardwareAddr(slices6(req.ClientHWAddr))
	rep.HopCount = 0
	rep.Flags = req.Flags & 0x8000 // only the broadcast bit has meaning
	rep.YourIPAddr = yiaddr.AsSlice()
	rep.ClientIPAddr = ciaddr.AsSlice()
	rep.ServerIPAddr = net.IPv4zero.To4()
	rep.GatewayIPAddr = net.IPv4zero.To4()
	rep.ServerHostName, rep.BootFileName = "", ""
	rep.Options.Del(dhcpv4.OptionRelayAgentInformation)
	rep.UpdateOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP.AsSlice()))
	if typ == dhcpv4.MessageTypeNak {
		return rep, nil
	}
	mask := net.CIDRMask(s.cfg.Subnet.Bits(), 32)
	rep.UpdateOption(dhcpv4.OptSubnetMask(mask))
	rep.UpdateOption(dhcpv4.OptBroadcastAddress(s.bcast.AsSlice()))
	rep.UpdateOption(dhcpv4.OptRouter(s.cfg.Router.AsSlice()))
	if len(s.cfg.DNS) > 0 {
		ips := make([]net.IP, len(s.cfg.DNS))
		for i, d := range s.cfg.DNS {
			ips[i] = d.AsSlice()
		}
		rep.UpdateOption(dhcpv4.OptDNS(ips...))
	}
	if s.cfg.Domain != "" {
		rep.UpdateOption(dhcpv4.OptDomainName(s.cfg.Domain))
	}
	if s.cfg.MTU > 0 {
		rep.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(s.cfg.MTU >> 8), byte(s.cfg.MTU)}))
	}
	if res, ok := s.resByMAC[macKey(rep.ClientHWAddr)]; ok && res.Hostname != "" && yiaddr == res.IP {
		// Only a name the operator assigned is sent; a client's own is not echoed.
		rep.UpdateOption(dhcpv4.OptHostName(res.Hostname))
	}
	if withLease {
		lt := s.cfg.LeaseTime.Truncate(time.Second)
		rep.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		rep.UpdateOption(dhcpv4.OptRenewTimeValue((lt / 2).Truncate(time.Second)))
		// lt*7/8 would overflow for leases of decades, which are allowed.
		rep.UpdateOption(dhcpv4.OptRebindingTimeValue((lt - lt/8).Truncate(time.Second)))
	}
	return rep, nil
}

func slices6(b []byte) []byte {
	out := make([]byte, 6)
	copy(out, b)
	return out
}

// --- lease table ---

// eligible reports whether ip may ever be given to a client: a host address
// of the subnet that is neither the server nor the router.
func (s *Server) eligible(ip netip.Addr) bool {
	return ip.Is4() && s.cfg.Subnet.Contains(ip) && ip != s.netAddr && ip != s.bcast &&
		ip != s.cfg.ServerIP && ip != s.cfg.Router
}

func (s *Server) inRange(ip netip.Addr) bool {
	v := u32(ip)
	return v >= s.rangeStart && v <= s.rangeEnd
}

// assignable reports whether ip is handed out at all: in the range or
// reserved.
func (s *Server) assignable(ip netip.Addr) bool {
	if !s.eligible(ip) {
		return false
	}
	_, reserved := s.resByIP[ip]
	return reserved || s.inRange(ip)
}

// usableFor reports whether mac may be given ip now.
func (s *Server) usableFor(mac macKey, ip netip.Addr, now time.Time) bool {
	if !s.eligible(ip) {
		return false
	}
	if owner, ok := s.resByIP[ip]; ok {
		return owner == mac
	}
	if _, ok := s.resByMAC[mac]; ok {
		return false // a reserved MAC gets its reservation only
	}
	if !s.inRange(ip) {
		return false
	}
	if r := s.recs[ip]; r != nil && r.active(now) && (r.mac != mac || r.state == StateDeclined) {
		return false
	}
	return true
}

// currentLocked returns mac's active offered or bound record, if any.
func (s *Server) currentLocked(mac macKey, now time.Time) *record {
	ip, ok := s.byMAC[mac]
	if !ok {
		return nil
	}
	r := s.recs[ip]
	if r == nil || r.mac != mac || !r.active(now) || r.state == StateDeclined {
		return nil
	}
	return r
}

// pick chooses the address to offer: the reservation, else the client's
// current or previous address, else the one it asks for, else a never used
// one, else the free one unused the longest.
func (s *Server) pick(mac macKey, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if res, ok := s.resByMAC[mac]; ok {
		return res.IP, true
	}
	if ip, ok := s.byMAC[mac]; ok {
		if r := s.recs[ip]; r != nil && r.mac == mac && s.usableFor(mac, ip, now) {
			return ip, true
		}
	}
	if requested.IsValid() && s.usableFor(mac, requested, now) {
		return requested, true
	}
	// Addresses without a record cost one map lookup each, and every address
	// skipped has a record, so this scan is bounded by the table size.
	for v := s.rangeStart; ; v++ {
		ip := addrU32(v)
		if s.recs[ip] == nil && s.usableFor(mac, ip, now) {
			return ip, true
		}
		if v == s.rangeEnd {
			break
		}
	}
	var best *record
	for _, r := range s.recs {
		if !s.usableFor(mac, r.ip, now) {
			continue
		}
		if best == nil || r.expiry.Before(best.expiry) || r.expiry.Equal(best.expiry) && r.ip.Less(best.ip) {
			best = r
		}
	}
	if best == nil {
		return netip.Addr{}, false
	}
	return best.ip, true
}

// setLocked installs r, taking over its IP and ending any other address the
// same MAC held: a client has one address per network.
func (s *Server) setLocked(r *record, now time.Time) {
	if old, ok := s.byMAC[r.mac]; ok && old != r.ip {
		if o := s.recs[old]; o != nil && o.mac == r.mac && o.state != StateDeclined {
			if o.active(now) {
				o.expiry = now
			}
			o.state = stateFree
		}
	}
	if prev := s.recs[r.ip]; prev != nil && prev.mac != r.mac {
		if s.byMAC[prev.mac] == r.ip {
			delete(s.byMAC, prev.mac)
		}
	}
	s.recs[r.ip] = r
	s.byMAC[r.mac] = r.ip
}
