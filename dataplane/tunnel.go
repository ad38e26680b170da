package dataplane

import (
	"errors"
	"net/netip"
	"time"

	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/dataplane/vxlan"
	"github.com/xdpswitch/xdpswitch/policy"
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
// decapsulated, each behind a metadata record (in the frame, in front of
// it) that names the frame's network and the VTEP that sent it, and outer
// fragments for reassembly.
// A frame is switched in its network only, and its source MAC learned as
// behind its VTEP.
func (l *loop) receiveTunnel(p *loopPort, now int64) int {
	n := p.sock.Receive(l.rx[:])
	if n == 0 {
		return 0
	}
	var rxPackets, rxBytes uint64
	n = l.takeRx(p, n)
	l.touchHeaders(n)
	for i := range n {
		if size, ok := l.uplinkFrame(p, l.rx[i], now); ok {
			rxPackets++
			rxBytes += uint64(size)
		}
	}
	l.tunnelDone(now)
	p.ctr.rxPackets.Add(rxPackets)
	p.ctr.rxBytes.Add(rxBytes)
	return n
}

// uplinkFrame takes one frame the loop received from the uplink: it reads
// the record in front of it and switches the frame, or adds it to its
// datagram. It returns the frame's size without the record, and false
// when there was no valid record, which the uplink program always writes:
// such a frame is dropped. The caller releases the FDB lock the frame may
// leave held (tunnelDone).
func (l *loop) uplinkFrame(p *loopPort, d afxdp.Desc, now int64) (uint32, bool) {
	f := l.umem.Bytes(d.Addr, int(d.Len))
	if f == nil {
		p.ctr.drop(DropInvalidDesc)
		l.pool.release(d.Addr)
		return 0, false
	}
	meta, err := bpf.ParseUplinkMeta(f[:min(len(f), bpf.UplinkMetaSize)])
	if err != nil {
		p.ctr.drop(DropBadMetadata)
		l.pool.release(d.Addr)
		return 0, false
	}
	// The frame is what follows the record; the descriptor shrinks to it,
	// so that it goes out as it is, with the record's bytes as headroom.
	d.Addr += bpf.UplinkMetaSize
	d.Len -= bpf.UplinkMetaSize
	f = f[bpf.UplinkMetaSize:]
	if meta.RawFragment {
		l.reassemble(p, d, f, meta, now)
		return d.Len, true
	}
	var ln *loopNet
	if int(meta.Network) < len(l.netByID) {
		ln = l.netByID[meta.Network]
	}
	l.switchTunnelFrame(p, ln, d, f, meta.OuterSrc.As16(), now)
	return d.Len, true
}

// switchTunnelFrame switches one inner frame from the tunnel in network
// ln. The FDB read lock of the batch's current network is held from one
// frame to the next and changed only when the network does (tunnelDone
// lets it go), so a batch of one VNI takes it once.
func (l *loop) switchTunnelFrame(p *loopPort, ln *loopNet, d afxdp.Desc, f []byte, vtep [16]byte, now int64) {
	if ln == nil {
		p.ctr.drop(DropUnknownVNI)
		l.pool.release(d.Addr)
		return
	}
	if ln != l.tunnelNet {
		l.tunnelDone(now)
		l.tunnelNet = ln
		ln.fdb.mu.RLock()
	}
	out, flood, reason, ok := decideFrom(f, p.id, &vtep, nil, ln.fdb, now, &l.learn)
	if !ok {
		p.ctr.drop(reason)
		l.pool.release(d.Addr)
		return
	}
	l.filter.view.parsed = false
	if l.judge(nil, ln.rules, policy.In, ingressZone(p.id, ln), p.ctr, d, f) {
		l.forward(p, ln, d, f, out, flood)
	}
	if len(l.filter.given) > 0 {
		l.settle(ln)
	}
}

// tunnelDone releases the current network's FDB lock and learns what the
// frames under it taught.
func (l *loop) tunnelDone(now int64) {
	if l.tunnelNet != nil {
		l.tunnelNet.fdb.mu.RUnlock()
		l.tunnelNet.fdb.apply(&l.learn, now)
		l.tunnelNet = nil
	}
}

// reassemble adds an outer fragment to its datagram (the reassembler
// copies it, so the frame goes back to the pool at once) and, when the
// datagram is complete, decapsulates it and switches the inner frame from
// a fresh UMEM frame.
func (l *loop) reassemble(p *loopPort, d afxdp.Desc, f []byte, meta bpf.UplinkMeta, now int64) {
	l3 := ethHeaderLen
	if meta.OuterVLAN {
		l3 += vlanHeaderLen
	}
	var pkt []byte
	var done bool
	var err error
	if len(f) > l3 {
		pkt, done, err = l.reasm.Add(f[l3:], time.Now(), l.reasmBuf[:0])
	}
	l.pool.release(d.Addr)
	if err != nil || len(f) <= l3 {
		p.ctr.drop(DropTunnelFragment)
		return
	}
	if !done {
		return
	}
	l.reasmBuf = pkt[:0] // keep the grown buffer
	inner, vni, src, _, err := vxlan.Decap(pkt, l.isLocal, l.vxlanPort)
	if err != nil {
		p.ctr.drop(DropTunnelFragment)
		return
	}
	var ln *loopNet
	for _, n := range l.netByID {
		if n != nil && n.tunnel != nil && n.tunnel.vni == vni {
			ln = n
			break
		}
	}
	addr, ok := l.pool.alloc()
	if !ok {
		p.ctr.drop(DropNoFrame)
		return
	}
	off := uint64(xdpPacketHeadroom + l.umem.Headroom())
	if int(off)+len(inner) > int(l.pool.frameSize) {
		p.ctr.drop(DropTooBig)
		l.pool.release(addr)
		return
	}
	copy(l.umem.Bytes(addr+off, len(inner)), inner)
	l.switchTunnelFrame(p, ln, afxdp.Desc{Addr: addr + off, Len: uint32(len(inner))}, l.umem.Bytes(addr+off, len(inner)), src.As16(), now)
}

// sendTunnel encapsulates a frame from a local port in place, in the
// headroom in front of it, for the VTEP its destination is behind.
func (l *loop) sendTunnel(in *loopPort, d afxdp.Desc, vtep [16]byte) {
	l.encapAndSend(in, d, vtep)
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
		l.encapAndSend(in, afxdp.Desc{Addr: addr + off, Len: d.Len}, r)
	}
}

// encapAndSend writes the outer headers in front of the frame and queues
// it on the uplink, in fragments when it exceeds the uplink's MTU (the
// encapsulation is ours, so DF is ours to clear). It drops the frame when
// the VTEP's next hop is not known yet.
func (l *loop) encapAndSend(in *loopPort, d afxdp.Desc, vtep [16]byte) {
	u := l.underlays[vtep]
	if u == nil {
		in.ctr.drop(DropNoUnderlay)
		l.pool.release(d.Addr)
		l.requestResolve(vtep)
		return
	}
	base := d.Addr - d.Addr%l.pool.frameSize
	start, length, err := l.enc.Encap(l.umem.Bytes(base, int(l.pool.frameSize)), int(d.Addr-base), int(d.Len), in.net.tunnel.vni, u)
	if err != nil {
		in.ctr.drop(DropTunnelEncap)
		l.pool.release(d.Addr)
		return
	}
	out := afxdp.Desc{Addr: base + uint64(start), Len: uint32(length)}
	limit := l.uplink.port.frameLimit
	if length <= limit {
		l.enqueue(l.uplink, out)
		return
	}
	pkt := l.umem.Bytes(out.Addr, length)
	mtu := limit - ethHeaderLen
	n, err := vxlan.Fragments(pkt, mtu)
	if err == nil && n > len(l.pool.free) {
		err = vxlan.ErrNoBuffer
	}
	if err != nil {
		in.ctr.drop(fragmentDrop(err))
		l.pool.release(d.Addr)
		return
	}
	l.frags = l.frags[:0]
	_, err = l.enc.Fragment(pkt, mtu, l.fragNext)
	l.pool.release(d.Addr)
	if err != nil {
		in.ctr.drop(fragmentDrop(err))
		for _, f := range l.frags {
			l.pool.release(f.Addr)
		}
		return
	}
	for _, f := range l.frags {
		l.enqueue(l.uplink, f)
	}
}

// fragmentDrop is the reason a frame that needed fragmenting was dropped:
// too few free frames for its fragments, or it cannot be fragmented to
// fit the uplink.
func fragmentDrop(err error) DropReason {
	if errors.Is(err, vxlan.ErrNoBuffer) {
		return DropNoFrame
	}
	return DropTooBig
}

// fragBuffer hands vxlan.Fragment a fresh frame for each fragment and notes
// it in l.frags. It is bound once, in newLoop, so that fragmenting does not
// allocate a closure per packet.
func (l *loop) fragBuffer(size int) []byte {
	addr, ok := l.pool.alloc()
	if !ok {
		return nil
	}
	off := uint64(xdpPacketHeadroom + l.umem.Headroom())
	l.frags = append(l.frags, afxdp.Desc{Addr: addr + off, Len: uint32(size)})
	return l.umem.Bytes(addr+off, size)
}

// requestResolve asks the switch to find a VTEP's next hop, without
// waiting: the frame that needed it is already dropped.
func (l *loop) requestResolve(vtep [16]byte) {
	select {
	case l.resolve <- vtep:
	default:
	}
}

// isLocal tells Decap whether an outer destination is this host's VTEP.
func (l *loop) isLocal(a netip.Addr) bool { return a.Unmap() == l.local }
