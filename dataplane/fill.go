package dataplane

import "time"

// How a queue's UMEM is split (see Config.maxPorts):
//
//   - a reserve, a quarter, that refill never hands to fill rings, so that
//     transmits and flood copies always find frames;
//   - a burst pool, an eighth, that the ports receiving traffic share to
//     hold more frames in their fill rings than their base share;
//   - the rest, base shares (Config.FillFrames) for as many ports as fit.
//
// A frame in a fill ring comes back only when its port receives, so an
// idle port keeps whatever it holds. Base shares and the burst pool are
// therefore sized up front: however the burst frames are spread when ports
// go idle, every port the switch admitted still finds its base share.

// reserveFrames is how many of a queue's frames refill leaves for transmit
// and flood copies.
func reserveFrames(numFrames int) int { return numFrames / 4 }

// burstFrames is how many of a queue's frames the ports share beyond their
// base shares.
func burstFrames(numFrames int) int { return numFrames / 8 }

// rateWindow is how often a loop re-reads its ports' receive rates.
const rateWindow = int64(time.Millisecond)

// burstWindows is how much traffic a busy port's fill ring holds frames
// for, in rate windows at the port's recent receive rate. The loop can be
// kept off its CPU for a millisecond or two (another task, the hypervisor,
// a long transmit); a port receiving 500 kpps needs a thousand frames
// to ride that out, far more than its base share.
const burstWindows = 4

// fillShare decides how many frames each socket of a loop holds in its fill
// ring: its base share always, and beyond that, while it receives, enough
// for burstWindows of its receive rate, out of the burst pool. When the
// busy ports want more than the pool holds, each gets the pool's part in
// proportion to its rate.
type fillShare struct {
	base  int // frames every socket may hold
	max   int // the most one socket holds: its fill or rx ring's size
	burst int // frames beyond base shares, shared by all sockets
	// extra is how many frames beyond their base shares the sockets hold
	// now, summed; it never exceeds burst.
	extra int
}

// newFillShare sizes the shares for base frames a socket, rings of ring
// entries and a UMEM of numFrames.
func newFillShare(base, ring, numFrames int) fillShare {
	return fillShare{base: base, max: max(base, ring), burst: burstFrames(numFrames)}
}

// held records that p's fill ring took (n > 0) or gave back (n < 0)
// frames: every change of p.fillHeld goes through here.
func (f *fillShare) held(p *loopPort, n int) {
	before := max(0, p.fillHeld-f.base)
	p.fillHeld += n
	f.extra += max(0, p.fillHeld-f.base) - before
}

// want is how many more frames p's fill ring should take: up to its base
// share, and up to its part of the burst pool as far as the other sockets
// left the pool room. A socket above its part is not topped up: it gives
// the excess back as it receives.
func (f *fillShare) want(p *loopPort) int {
	target := f.base
	if p.extra > 0 {
		mine := max(0, p.fillHeld-f.base)
		room := f.burst - (f.extra - mine)
		target += max(0, min(p.extra, room))
	}
	return min(target, f.max) - p.fillHeld
}

// update ends a rate window of elapsed ns: every port's receive rate is
// re-read (a burst counts at once, a lull fades over a few windows), and
// its part of the burst pool set from it.
func (f *fillShare) update(ports []*loopPort, elapsed int64) {
	demand := 0
	for _, p := range ports {
		perWindow := int(int64(p.rxWindow) * rateWindow / max(elapsed, 1))
		p.rxWindow = 0
		p.rate = max(perWindow, p.rate*7/8)
		p.extra = min(burstWindows*p.rate, f.max-f.base)
		demand += p.extra
	}
	if demand > f.burst {
		for _, p := range ports {
			p.extra = p.extra * f.burst / demand
		}
	}
}
