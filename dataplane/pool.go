package dataplane

import (
	"fmt"

	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
)

// frameState is where a UMEM frame is. Every frame is in exactly one place;
// the pool records it so that a socket's frames can be taken back when its
// device vanishes, and so that tests can prove nothing leaked.
type frameState uint8

const (
	frameFree     frameState = iota // on the pool's free stack
	frameFill                       // given to a socket's fill ring (kernel: fill or rx ring)
	frameLoop                       // held by the loop during a batch
	frameTx                         // given to a socket's tx ring (kernel: tx or completion ring)
	frameHeld                       // a fragment the loop's fragment tracker holds
	frameSettling                   // a closed zero-copy socket's; its driver may still write to it
)

var frameStateNames = [...]string{"free", "fill", "loop", "tx", "held", "settling"}

func (s frameState) String() string { return frameStateNames[s] }

// framePool owns one loop's UMEM frames. Only the loop goroutine touches it.
type framePool struct {
	frameSize uint64
	free      []uint64 // stack of chunk base addresses
	state     []frameState
	owner     []uint32 // port id of the socket holding a fill or tx frame
	// settling are the frames of closed zero-copy sockets, oldest first,
	// each free again from its time on (see reclaim).
	settling []settlingFrame
}

type settlingFrame struct {
	addr uint64
	at   int64
}

func newFramePool(u *afxdp.Umem) *framePool {
	n := u.NumFrames()
	p := &framePool{
		frameSize: uint64(u.FrameSize()),
		free:      make([]uint64, 0, n),
		state:     make([]frameState, n),
		owner:     make([]uint32, n),
	}
	// Pushed in reverse so the lowest addresses are handed out first.
	for i := n - 1; i >= 0; i-- {
		p.free = append(p.free, u.FrameAddr(i))
	}
	return p
}

// index maps any address inside a frame to its frame, or -1 when the
// address lies outside the UMEM.
func (p *framePool) index(addr uint64) int {
	i := addr / p.frameSize
	if i >= uint64(len(p.state)) {
		return -1
	}
	return int(i)
}

// alloc takes a free frame for the loop.
func (p *framePool) alloc() (uint64, bool) {
	n := len(p.free)
	if n == 0 {
		return 0, false
	}
	addr := p.free[n-1]
	p.free = p.free[:n-1]
	p.state[addr/p.frameSize] = frameLoop
	return addr, true
}

// release puts a frame the loop holds back on the free stack.
func (p *framePool) release(addr uint64) {
	i := addr / p.frameSize
	p.state[i] = frameFree
	p.free = append(p.free, i*p.frameSize)
}

// take moves a frame that a socket returned (from its rx or completion
// ring) to the loop, after checking that the socket really held it in that
// role. A descriptor that fails the check is reported and left alone.
func (p *framePool) take(addr uint64, from frameState, port uint32) bool {
	i := p.index(addr)
	if i < 0 || p.state[i] != from || p.owner[i] != port {
		return false
	}
	p.state[i] = frameLoop
	return true
}

// give records that the loop handed a frame to a socket's ring.
func (p *framePool) give(addr uint64, to frameState, port uint32) {
	i := addr / p.frameSize
	p.state[i] = to
	p.owner[i] = port
}

// hold records that the fragment tracker took a frame from the loop.
func (p *framePool) hold(addr uint64) { p.state[addr/p.frameSize] = frameHeld }

// unhold takes back a frame the fragment tracker returned, after checking
// that it held it.
func (p *framePool) unhold(addr uint64) bool {
	i := p.index(addr)
	if i < 0 || p.state[i] != frameHeld {
		return false
	}
	p.state[i] = frameLoop
	return true
}

// reclaim takes back every frame a closed socket held. They are free at
// once, unless settleAt is given: a zero-copy driver lets go of the
// frames it took from the socket's fill ring only when the kernel
// releases the socket's buffer pool, from a workqueue, after the socket
// is gone. Until then the device may still write packets into them, so
// they wait until settleAt (see settle) before anyone else gets them.
func (p *framePool) reclaim(port uint32, settleAt int64) int {
	n := 0
	for i, s := range p.state {
		if (s == frameFill || s == frameTx) && p.owner[i] == port {
			addr := uint64(i) * p.frameSize
			if settleAt != 0 {
				p.state[i] = frameSettling
				p.settling = append(p.settling, settlingFrame{addr, settleAt})
			} else {
				p.state[i] = frameFree
				p.free = append(p.free, addr)
			}
			n++
		}
	}
	return n
}

// settle frees the settling frames whose time has come. Each removal
// gives its frames a later time than the ones before, so they are a
// prefix.
func (p *framePool) settle(now int64) {
	n := 0
	for n < len(p.settling) && p.settling[n].at <= now {
		addr := p.settling[n].addr
		p.state[addr/p.frameSize] = frameFree
		p.free = append(p.free, addr)
		n++
	}
	p.settling = append(p.settling[:0], p.settling[n:]...)
}

// FrameAccount is where one loop's frames are, for the accounting check.
type FrameAccount struct {
	Queue int
	Total int
	Free  int
	Fill  int   // in fill rings and the kernel's rx path, closed sockets' too
	Tx    int   // in tx rings and the kernel's completion path
	Loop  int   // held by the loop; zero between batches
	Held  int   // fragments the fragment tracker holds
	Err   error // how the check failed; nil if it held
}

// check verifies that every frame is in exactly one place: the free stack
// holds each free frame once and nothing else, and the per-port counts the
// loop keeps agree with the per-frame record. held gives, per port id, the
// fill and tx counts the loop believes each socket holds; tracked the
// frames the fragment tracker says it holds.
func (p *framePool) check(held map[uint32][2]int, tracked []uint64) (FrameAccount, error) {
	a := FrameAccount{Total: len(p.state)}
	counts := make(map[uint32][2]int)
	settling := 0
	for i, s := range p.state {
		switch s {
		case frameFree:
			a.Free++
		case frameFill:
			a.Fill++
			c := counts[p.owner[i]]
			c[0]++
			counts[p.owner[i]] = c
		case frameTx:
			a.Tx++
			c := counts[p.owner[i]]
			c[1]++
			counts[p.owner[i]] = c
		case frameLoop:
			a.Loop++
		case frameHeld:
			a.Held++
		case frameSettling:
			a.Fill++
			settling++
		}
	}
	if settling != len(p.settling) {
		return a, fmt.Errorf("%d frames are marked settling, the list has %d", settling, len(p.settling))
	}
	for _, f := range p.settling {
		if i := p.index(f.addr); i < 0 || p.state[i] != frameSettling {
			return a, fmt.Errorf("settling list holds %#x, which is not marked settling", f.addr)
		}
	}
	if a.Held != len(tracked) {
		return a, fmt.Errorf("%d frames are marked held, the fragment tracker holds %d", a.Held, len(tracked))
	}
	for _, addr := range tracked {
		if i := p.index(addr); i < 0 || p.state[i] != frameHeld {
			return a, fmt.Errorf("the fragment tracker holds %#x, which is not marked held", addr)
		}
	}
	if a.Loop != 0 {
		return a, fmt.Errorf("%d frames held by the loop between batches", a.Loop)
	}
	if len(p.free) != a.Free {
		return a, fmt.Errorf("free stack has %d entries, %d frames are marked free", len(p.free), a.Free)
	}
	seen := make([]bool, len(p.state))
	for _, addr := range p.free {
		i := p.index(addr)
		if i < 0 || addr%p.frameSize != 0 {
			return a, fmt.Errorf("free stack holds bad address %#x", addr)
		}
		if seen[i] || p.state[i] != frameFree {
			return a, fmt.Errorf("frame %d is on the free stack twice or while %v", i, p.state[i])
		}
		seen[i] = true
	}
	for port, c := range counts {
		if held[port] != c {
			return a, fmt.Errorf("port %d holds %d fill and %d tx frames, the loop counted %d and %d", port, c[0], c[1], held[port][0], held[port][1])
		}
	}
	for port, c := range held {
		if c != counts[port] {
			return a, fmt.Errorf("loop counts %d fill and %d tx frames for port %d, the frames say %d and %d", c[0], c[1], port, counts[port][0], counts[port][1])
		}
	}
	return a, nil
}
