package dataplane

import (
	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/dataplane/vxlan"
)

// tunnel is a network's VXLAN side.
type tunnel struct {
	vni uint32
	// remotes are the other hosts' VTEPs (IPv4 as v4-mapped), which get a
	// copy of every broadcast and unknown unicast: head-end replication.
	remotes [][16]byte
}

// underlayMap is how to reach each remote VTEP: the next hop's MAC and our
// own addresses. The switch resolves it outside the loops and publishes a
// new map when something changes.
type underlayMap map[[16]byte]*vxlan.Underlay

// receiveTunnel takes a batch from the uplink: inner frames its program
// decapsulated, each behind a metadata record that names the frame's
// network and the VTEP that sent it. The frame is switched in that network
// only, and its source MAC learned as behind that VTEP.
func (l *loop) receiveTunnel(p *loopPort, now int64) int {
	n := p.sock.Receive(l.rx[:])
	if n == 0 {
		return 0
	}
	var rxPackets, rxBytes uint64
	var cur *loopNet // whose FDB read lock is held
	release := func() {
		if cur != nil {
			cur.fdb.mu.RUnlock()
			cur.fdb.apply(&l.learn, now)
		}
	}
	for i := range n {
		d := l.rx[i]
		if !l.pool.take(d.Addr, frameFill, p.id) {
			p.ctr.drop(DropInvalidDesc)
			continue
		}
		p.fillHeld--
		f := l.umem.Bytes(d.Addr, int(d.Len))
		meta, err := bpf.ParseUplinkMeta(l.umem.Meta(d.Addr, bpf.UplinkMetaSize))
		if f == nil || err != nil {
			p.ctr.drop(DropBadMetadata)
			l.pool.release(d.Addr)
			continue
		}
		rxPackets++
		rxBytes += uint64(d.Len)
		if meta.RawFragment {
			// Outer fragments are steered here to be reassembled before
			// decapsulation; until that is in place they are counted.
			p.ctr.drop(DropTunnelFragment)
			l.pool.release(d.Addr)
			continue
		}
		var ln *loopNet
		if int(meta.Network) < len(l.netByID) {
			ln = l.netByID[meta.Network]
		}
		if ln == nil {
			p.ctr.drop(DropUnknownVNI)
			l.pool.release(d.Addr)
			continue
		}
		if ln != cur {
			release()
			cur = ln
			cur.fdb.mu.RLock()
		}
		vtep := meta.OuterSrc.As16()
		out, flood, reason, ok := decideFrom(f, p.id, &vtep, nil, ln.fdb, now, &l.learn)
		switch {
		case !ok:
			p.ctr.drop(reason)
			l.pool.release(d.Addr)
		case !flood && int(out.port) < len(l.ports) && l.ports[out.port] != nil:
			l.enqueue(l.ports[out.port], d)
		default:
			l.floodMembers(ln, p, d, f)
		}
	}
	release()
	p.ctr.rxPackets.Add(rxPackets)
	p.ctr.rxBytes.Add(rxBytes)
	l.flush()
	return n
}

// sendTunnel encapsulates a frame from a local port in place, in the
// headroom in front of it, for the VTEP its destination is behind.
func (l *loop) sendTunnel(in *loopPort, d afxdp.Desc, vtep [16]byte) {
	if d, ok := l.encap(in, d, vtep); ok {
		l.enqueue(l.uplink, d)
	}
}

// replicate sends a copy of a flooded frame to every remote VTEP of the
// network.
func (l *loop) replicate(in *loopPort, t *tunnel, d afxdp.Desc, f []byte) {
	if l.uplink == nil || l.uplink.broken {
		return
	}
	off := d.Addr % l.pool.frameSize
	for _, r := range t.remotes {
		addr, ok := l.pool.alloc()
		if !ok {
			in.ctr.drop(DropNoFrame)
			continue
		}
		copy(l.umem.Bytes(addr+off, len(f)), f)
		if c, ok := l.encap(in, afxdp.Desc{Addr: addr + off, Len: d.Len}, r); ok {
			l.enqueue(l.uplink, c)
		}
	}
}

// encap writes the outer headers in front of the frame, or drops it
// (returning the frame to the pool) when the VTEP's next hop is unknown or
// the result would not fit the uplink.
func (l *loop) encap(in *loopPort, d afxdp.Desc, vtep [16]byte) (afxdp.Desc, bool) {
	u := l.underlays[vtep]
	if u == nil {
		in.ctr.drop(DropNoUnderlay)
		l.pool.release(d.Addr)
		l.requestResolve(vtep)
		return d, false
	}
	base := d.Addr - d.Addr%l.pool.frameSize
	start, length, err := l.enc.Encap(l.umem.Bytes(base, int(l.pool.frameSize)), int(d.Addr-base), int(d.Len), in.net.tunnel.vni, u)
	switch {
	case err != nil:
		in.ctr.drop(DropTunnelEncap)
	case length > l.uplink.port.frameLimit:
		in.ctr.drop(DropTooBig)
	default:
		return afxdp.Desc{Addr: base + uint64(start), Len: uint32(length)}, true
	}
	l.pool.release(d.Addr)
	return d, false
}

// requestResolve asks the switch to find a VTEP's next hop, without
// waiting: the frame that needed it is already dropped.
func (l *loop) requestResolve(vtep [16]byte) {
	select {
	case l.resolve <- vtep:
	default:
	}
}
