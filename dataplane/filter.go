package dataplane

import (
	"time"

	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/dataplane/frag"
	"github.com/xdpswitch/xdpswitch/policy"
)

// Policy in the loop. A frame meets up to three rulesets: the rules of the
// port it came from (direction in) and of its network, judged together
// once per frame (the ingress stage), and the rules of each port it leaves
// by (direction out), judged per port (an egress stage; a flood meets one
// per member). A stage without rules costs two pointer loads.
//
// A stage's verdict on a datagram's first fragment applies to every
// fragment of it (RFC 8900 §6.3): the loop's frag.Tracker remembers it per
// stage, keyed by the datagram and the stage's zone, and holds the
// fragments that arrive before their first one. Fragments that only pass
// through stages without rules are not tracked: no rule has anything to
// say about them.

// Zones keep the datagrams of different stages apart in the tracker: an
// ingress stage is its port and network, an egress stage its port.
const (
	zoneEgress   = 1 << 31
	zonePortMask = 0xffff
)

func ingressZone(port uint32, ln *loopNet) uint32 {
	return port&zonePortMask | (ln.id&maxNetworkID)<<16
}

func egressZone(port uint32) uint32 { return zoneEgress | port&zonePortMask }

// frameView is the frame at hand as the stages see it, parsed once for
// all of them: a flood's copies share it.
type frameView struct {
	parsed  bool
	isIP    bool
	isFrag  bool
	pkt     policy.Packet
	info    frag.Info
	infoErr error
}

// filter is a loop's policy state.
type filter struct {
	tracker *frag.Tracker
	// given are the frames the tracker handed back, handled by settle
	// after the frame at hand.
	given []frag.Held
	view  frameView
}

func newFilter(cfg frag.TrackerConfig) filter {
	t := frag.NewTracker(cfg)
	return filter{tracker: t, given: make([]frag.Held, 0, t.Config().MaxHeldFrames+1)}
}

// parse fills the view of frame f.
func (v *frameView) parse(f []byte) {
	v.parsed = true
	var first bool
	v.isIP, v.isFrag, first = policy.PacketFromFrame(f, policy.Both, &v.pkt)
	v.infoErr = nil
	if v.isIP && v.isFrag {
		v.info, v.infoErr = frag.Parse(f[l3Offset(f):])
		switch {
		case v.infoErr != nil:
		case !v.info.IsFragment:
			v.isFrag = false // an IPv6 atomic fragment is a whole packet
		case v.info.First != first:
			v.infoErr = frag.ErrMalformed // the parsers disagree: trust neither
		}
	}
}

// l3Offset is where the IP header starts, behind any VLAN tags; validate
// has checked that the tags are there.
func l3Offset(f []byte) int {
	off := 12
	for {
		et := uint16(f[off])<<8 | uint16(f[off+1])
		if et != etherTypeVLAN && et != etherTypeQinQ {
			return off + 2
		}
		off += vlanHeaderLen
	}
}

// hasRules tells whether a matcher has rules in force this batch.
func hasRules(m *policy.Matcher) bool { return m != nil && m.Classifier() != nil }

// judge runs a stage over the frame at hand (d, f): the rules of
// port (direction dir) and then of net, either of which may have none.
// It returns true when the frame goes on; otherwise the frame is gone:
// dropped and counted on ctr, or held by the fragment tracker.
func (l *loop) judge(port, net *policy.Matcher, dir policy.Direction, zone uint32, ctr *portCounters, d afxdp.Desc, f []byte) bool {
	if !hasRules(port) && !hasRules(net) {
		return true
	}
	v := &l.filter.view
	if !v.parsed {
		v.parse(f)
	}
	if !v.isIP {
		return true // ARP and the like are for port security, not rules
	}
	if !v.isFrag {
		if act, _, _ := l.match(port, net, dir); act == policy.Deny {
			ctr.drop(DropPolicy)
			l.pool.release(d.Addr)
			return false
		}
		return true
	}
	t := l.filter.tracker
	v.info.Key.Zone = zone
	now := time.Now()
	var o frag.Outcome
	switch {
	case v.infoErr != nil:
		o, l.filter.given = t.Reject(&v.info, v.infoErr, now, l.filter.given)
	case v.info.First:
		act, pr, nr := l.match(port, net, dir)
		v.info.Tag = uint64(ruleTag(port, pr)) | uint64(ruleTag(net, nr))<<32
		fa := frag.Allow
		if act == policy.Deny {
			fa = frag.Deny
		}
		o, l.filter.given = t.First(&v.info, fa, now, l.filter.given)
	default:
		o, l.filter.given = t.Later(&v.info, frag.Held{Handle: d.Addr, Aux: zone, Len: d.Len}, now, l.filter.given)
		if o.Action == frag.Allow || o.Action == frag.Deny {
			follow(port, net, o.Tag, int(d.Len))
		}
	}
	switch o.Action {
	case frag.Allow:
		return true
	case frag.Hold:
		l.pool.hold(d.Addr)
		return false
	case frag.Deny:
		ctr.drop(DropPolicy)
	default:
		ctr.drop(DropFragment)
	}
	l.pool.release(d.Addr)
	return false
}

// match classifies the frame at hand with the port's rules and then the
// network's, stopping at the first deny. It also returns the rule of each
// that decided (-1: the default; notConsulted), for a first fragment's
// tag (see ruleTag).
func (l *loop) match(port, net *policy.Matcher, dir policy.Direction) (a policy.Action, portRule, netRule int) {
	p := &l.filter.view.pkt
	portRule, netRule = notConsulted, notConsulted
	if hasRules(port) {
		p.Dir = dir
		if a, portRule = port.Match(p); a == policy.Deny {
			return a, portRule, netRule
		}
	}
	if hasRules(net) {
		p.Dir = policy.Both
		if a, netRule = net.Match(p); a == policy.Deny {
			return a, portRule, netRule
		}
	}
	return policy.Allow, portRule, netRule
}

// notConsulted is the rule of a matcher that match did not consult.
const notConsulted = -2

// tagGenShift splits a half tag: rule r as r+2 below it (0: the rules
// were not consulted; 1: the default), the low bits of the classifier's
// generation above it.
const tagGenShift = 20

var _ = [1]int{}[(policy.MaxRules+2)>>tagGenShift] // rule numbers fit below it

// ruleTag is the half tag for rule r of m's classifier: the tag records
// which rules decided a first fragment, for counting the datagram's later
// fragments against them, the port's in the low half and the network's in
// the high half. 0 when the rules were not consulted.
func ruleTag(m *policy.Matcher, r int) uint32 {
	if r == notConsulted {
		return 0
	}
	return uint32(r+2) | genBits(m)
}

// genBits is m's classifier's generation as it stands in a half tag.
func genBits(m *policy.Matcher) uint32 { return m.Classifier().Gen() << tagGenShift }

// follow counts a later fragment against the rules that decided its
// first, unless they have been replaced since: then their numbers are no
// longer the rules in force.
func follow(port, net *policy.Matcher, tag uint64, bytes int) {
	followHalf(port, uint32(tag), bytes)
	followHalf(net, uint32(tag>>32), bytes)
}

func followHalf(m *policy.Matcher, half uint32, bytes int) {
	if half != 0 && m != nil && half&^(1<<tagGenShift-1) == genBits(m) {
		m.CountFollowing(int(half&(1<<tagGenShift-1))-2, bytes)
	}
}

// settle handles the frames the fragment tracker handed back: those
// allowed go on from the stage that held them, the others are freed and
// counted. locked is the network whose FDB read lock the caller holds.
func (l *loop) settle(locked *loopNet) {
	for i := 0; i < len(l.filter.given); i++ { // forwarding may add more
		h := l.filter.given[i]
		if !l.pool.unhold(h.Handle) {
			continue // not a frame the tracker was given: never expected
		}
		p := l.zonePort(h.Aux)
		if h.Action != frag.Allow || p == nil || p.broken {
			if p != nil {
				if h.Action == frag.Deny {
					p.ctr.drop(DropPolicy)
				} else {
					p.ctr.drop(DropFragment)
				}
			}
			l.pool.release(h.Handle)
			continue
		}
		d := afxdp.Desc{Addr: h.Handle, Len: h.Len}
		f := l.umem.Bytes(d.Addr, int(d.Len))
		l.filter.view.parsed = false
		if h.Aux&zoneEgress != 0 {
			follow(p.rules, nil, h.Tag, int(d.Len))
			l.enqueue(p, d)
			continue
		}
		ln := l.zoneNet(p, h.Aux)
		if ln == nil {
			p.ctr.drop(DropUnknownVNI)
			l.pool.release(d.Addr)
			continue
		}
		follow(p.rules, ln.rules, h.Tag, int(d.Len))
		if ln != locked {
			ln.fdb.mu.RLock()
		}
		out, flood, reason, ok := route(f, p.id, ln.fdb)
		if ok {
			l.forward(p, ln, d, f, out, flood)
		} else {
			p.ctr.drop(reason)
			l.pool.release(d.Addr)
		}
		if ln != locked {
			ln.fdb.mu.RUnlock()
		}
	}
	l.filter.given = l.filter.given[:0]
}

// rulesChanged lets the fragments held for stages that no longer have
// rules go on. Their first fragments now pass unjudged, so nothing would
// give them a verdict: they are allowed, as the first fragments are.
func (l *loop) rulesChanged() {
	l.filter.given = l.filter.tracker.Forget(func(zone uint32) bool { return !l.zoneHasRules(zone) }, frag.Allow, l.filter.given)
	l.settle(nil)
}

// zoneHasRules tells whether the stage of a fragment zone has rules now.
func (l *loop) zoneHasRules(zone uint32) bool {
	p := l.zonePort(zone)
	switch {
	case p == nil:
		return false
	case hasRules(p.rules):
		return true // the egress stage, or the ingress stage's port half
	case zone&zoneEgress != 0:
		return false
	}
	ln := l.zoneNet(p, zone)
	return ln != nil && hasRules(ln.rules)
}

// zonePort is the port of a fragment zone, nil when it is gone.
func (l *loop) zonePort(zone uint32) *loopPort {
	if id := zone & zonePortMask; int(id) < len(l.ports) {
		return l.ports[id]
	}
	return nil
}

// zoneNet is the network of port p's ingress zone: the port's own, or
// for the uplink the one the zone names; nil when it is gone.
func (l *loop) zoneNet(p *loopPort, zone uint32) *loopNet {
	if p != l.uplink {
		return p.net
	}
	if n := int(zone>>16) & maxNetworkID; n < len(l.netByID) {
		return l.netByID[n]
	}
	return nil
}

// expireFragments gives up on datagrams whose first fragment never came.
func (l *loop) expireFragments() {
	l.filter.given = l.filter.tracker.Expire(time.Now(), l.filter.given)
	l.settle(nil)
}
