package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane/frag"
	"github.com/xdpswitch/xdpswitch/dataplane/vxlan"
)

// AddUplink plugs in the host's NIC towards other hosts, with local as this
// host's VTEP address: its program takes VXLAN for the switch's VNIs and
// hands everything else to the host stack.
func (s *Switch) AddUplink(device string, local netip.Addr, port uint16) error {
	if port == 0 {
		port = vxlan.DefaultPort
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("switch is closed")
	}
	if s.uplink != nil {
		return existsf("the switch already has uplink %s", s.uplink.Name)
	}
	cfg := bpf.UplinkConfig{VXLANPort: port, Local: []netip.Addr{local}, VNIs: map[uint32]uint32{}}
	for _, n := range s.networks {
		if n.tunnel != nil {
			cfg.VNIs[n.tunnel.vni] = n.id
		}
	}
	var prog *bpf.Uplink
	attach := func(ifindex int) (portProgram, error) {
		var err error
		prog, err = bpf.AttachUplink(ifindex, s.cfg.XDPMode, cfg)
		return prog, err
	}
	if err := s.addPortLocked(device, nil, PortOptions{}, attach); err != nil {
		return err
	}
	s.uplink, s.uplinkProg, s.local, s.vxlanPort = s.ports[device], prog, local.Unmap(), port
	if n := activeRxQueues(device); n > s.cfg.Queues {
		s.log.Warn("the uplink receives on more queues than the switch serves: VXLAN that RSS puts on the others goes to the host, and is lost (ethtool -L, or steer the VXLAN port to the served queues)",
			"uplink", device, "rx_queues", n, "queues", s.cfg.Queues)
	}
	for _, l := range s.loops {
		if err := l.do(func() { l.local, l.vxlanPort = local.Unmap(), port }); err != nil {
			return err
		}
	}
	s.wg.Add(1)
	go s.resolveUnderlays()
	return nil
}

// SetVXLAN joins a network to a VNI through the uplink, replicating
// broadcast and unknown unicast to the remote VTEPs.
func (s *Switch) SetVXLAN(network string, vni uint32, remotes []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.networks[network]
	if !ok {
		return notFoundf("no network %q", network)
	}
	if s.uplinkProg == nil {
		return fmt.Errorf("network %q: VXLAN needs an uplink", network)
	}
	for _, other := range s.networks {
		if other != n && other.tunnel != nil && other.tunnel.vni == vni {
			return existsf("VNI %d is already network %q's", vni, other.Name)
		}
	}
	t := &tunnel{vni: vni}
	for _, r := range remotes {
		t.remotes = append(t.remotes, r.As16())
	}
	// The uplink first: if it refuses, nothing is left to undo. Until the
	// loops below know the network, its frames count as unknown_vni.
	if err := s.uplinkProg.SetVNI(vni, n.id); err != nil {
		return err
	}
	for _, l := range s.loops {
		if err := l.do(func() {
			ln := l.net(n)
			ln.tunnel = t
			for int(n.id) >= len(l.netByID) {
				l.netByID = append(l.netByID, nil)
			}
			l.netByID[n.id] = ln
		}); err != nil {
			return err // the switch is closing
		}
	}
	n.tunnel = t
	s.log.Info("VXLAN", "network", network, "vni", vni, "remotes", remotes)
	select {
	case s.resolve <- [16]byte{}: // look the new remotes up now
	default:
	}
	return nil
}

// resolveInterval is how often next hops towards remote VTEPs are looked
// up again, so that a changed neighbour is followed.
const resolveInterval = 2 * time.Second

// resolveUnderlays keeps the loops' map of how to reach each remote VTEP:
// the route's next hop and its MAC from the host's neighbour table. A next
// hop not in the table yet is made to resolve by sending it a datagram
// through the host stack, which then ARPs (or solicits) for it.
func (s *Switch) resolveUnderlays() {
	defer s.wg.Done()
	tick := time.NewTicker(resolveInterval)
	defer tick.Stop()
	for {
		s.publishUnderlays()
		select {
		case <-s.stop:
			return
		case <-tick.C:
		case <-s.resolve:
			// Collapse a burst of requests into one lookup, after the
			// neighbour has had a moment to answer.
			time.Sleep(50 * time.Millisecond)
			for len(s.resolve) > 0 {
				<-s.resolve
			}
		}
	}
}

func (s *Switch) publishUnderlays() {
	s.mu.Lock()
	up := s.uplink
	local, port := s.local, s.vxlanPort
	var remotes []netip.Addr
	for _, n := range s.networks {
		if n.tunnel == nil {
			continue
		}
		for _, r := range n.tunnel.remotes {
			a := netip.AddrFrom16(r).Unmap()
			if !slices.Contains(remotes, a) {
				remotes = append(remotes, a)
			}
		}
	}
	s.mu.Unlock()
	if up == nil {
		return
	}
	link, err := netlink.LinkByIndex(up.Ifindex)
	if err != nil {
		return
	}
	srcMAC := [6]byte(link.Attrs().HardwareAddr)
	m := underlayMap{}
	for _, r := range remotes {
		mac, err := nextHopMAC(up.Ifindex, r)
		if err != nil {
			s.log.Debug("VTEP next hop", "vtep", r, "err", err)
			poke(r, port)
			continue
		}
		m[r.As16()] = &vxlan.Underlay{SrcMAC: srcMAC, DstMAC: mac, Src: local, Dst: r, DstPort: port}
	}
	s.underlays.Store(&m)
}

// nextHopMAC finds the MAC of the next hop towards addr on the uplink.
func nextHopMAC(ifindex int, addr netip.Addr) ([6]byte, error) {
	routes, err := netlink.RouteGet(addr.AsSlice())
	if err != nil || len(routes) == 0 {
		return [6]byte{}, fmt.Errorf("no route: %v", err)
	}
	r := routes[0]
	if r.LinkIndex != ifindex {
		return [6]byte{}, fmt.Errorf("the route leaves through another device (%d)", r.LinkIndex)
	}
	hop := addr
	if r.Gw != nil {
		hop, _ = netip.AddrFromSlice(r.Gw)
	}
	family := netlink.FAMILY_V4
	if hop.Unmap().Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := netlink.NeighList(ifindex, family)
	if err != nil {
		return [6]byte{}, err
	}
	for _, n := range neighs {
		ip, _ := netip.AddrFromSlice(n.IP)
		usable := n.State&(unix.NUD_REACHABLE|unix.NUD_STALE|unix.NUD_DELAY|unix.NUD_PROBE|unix.NUD_PERMANENT) != 0
		if ip.Unmap() == hop.Unmap() && usable && len(n.HardwareAddr) == 6 {
			return [6]byte(n.HardwareAddr), nil
		}
	}
	return [6]byte{}, errors.New("next hop not in the neighbour table")
}

// poke sends an empty datagram to a VTEP through the host stack so that it
// resolves the next hop; the remote's VXLAN stack drops it as malformed.
func poke(addr netip.Addr, port uint16) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
	if err != nil {
		return
	}
	_, _ = c.Write(nil)
	c.Close()
}

// ReassemblyStats sums the loops' reassembly of outer tunnel fragments.
func (s *Switch) ReassemblyStats() frag.ReassemblyStats {
	sum := frag.ReassemblyStats{Dropped: map[string]uint64{}, DroppedDatagrams: map[string]uint64{}}
	for _, l := range s.loops {
		sum.Add(l.reasm.Stats())
	}
	return sum
}

// activeRxQueues is how many rx queues a device receives on: sysfs has a
// directory for each queue in use, where netlink's count is of the queues
// the device could enable. 0 when sysfs cannot tell.
func activeRxQueues(device string) int {
	entries, err := os.ReadDir(filepath.Join("/sys/class/net", device, "queues"))
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "rx-") {
			n++
		}
	}
	return n
}
