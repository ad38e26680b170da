package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/dataplane/frag"
	"github.com/xdpswitch/xdpswitch/dataplane/vxlan"
	"github.com/xdpswitch/xdpswitch/policy"
)

// batchSize is how many frames a loop takes from one socket at a time.
const batchSize = 64

// errLoopStopped is returned for work sent to a loop that has ended.
var errLoopStopped = errors.New("switching loop stopped")

// zeroCopySettle is how long the frames of a closed zero-copy socket wait
// before they are used again (see framePool.reclaim). The kernel lets go
// of them within milliseconds, an RCU grace period and a workqueue run.
const zeroCopySettle = time.Second

// loop switches queue k of every port. It alone touches those sockets, their
// rings and its UMEM, so the hot path takes no lock but the FDB's read lock
// once per batch. The control plane changes a loop only by handing it a
// function to run between batches (do).
type loop struct {
	queue int
	umem  *afxdp.Umem
	pool  *framePool
	log   *slog.Logger
	// fill decides how many frames each socket holds for receiving.
	fill fillShare
	// reserve is how many free frames refill leaves for transmit and flood.
	reserve int
	// rateStart is when the current receive-rate window began.
	rateStart int64

	ports  []*loopPort // by port id; nil where the port has no socket here
	active []*loopPort
	// uplink is the port VXLAN tunnels cross, nil without one; it is in
	// active but in no network's members.
	uplink *loopPort
	// netByID finds a tunnel frame's network from its metadata.
	netByID []*loopNet
	enc     vxlan.Encoder
	// frags are the fragments of one outer packet being written, and
	// fragNext the bound fragBuffer that vxlan.Fragment fills them through.
	frags    []afxdp.Desc
	fragNext func(int) []byte
	// reasm puts outer fragments of tunnel packets back together, under
	// its memory, count and 30 s time bounds; reasmBuf is its output.
	reasm      *frag.Reassembler
	reasmBuf   []byte
	lastExpire int64
	// tunnelNet is the network whose FDB read lock a tunnel batch holds.
	tunnelNet *loopNet
	// local and vxlanPort are the uplink's VTEP address and UDP port.
	local     netip.Addr
	vxlanPort uint16
	// underlays is the snapshot of remote VTEPs' next hops, loaded once
	// per batch.
	underlays underlayMap
	dirty     []*loopPort // ports with frames queued for transmit
	nets      map[*Network]*loopNet
	// filter applies the ports' and networks' rules, fragments included.
	filter filter

	ctl    chan func()
	wakeFd int // eventfd that interrupts poll when control work arrives
	// underlaySrc is where the switch publishes the underlay map; resolve
	// asks it to look up a VTEP's next hop.
	underlaySrc *atomic.Pointer[underlayMap]
	resolve     chan<- [16]byte
	done        chan struct{}
	stop        bool
	broken      chan<- *Port // ports whose socket reported an error

	rx      [batchSize]afxdp.Desc
	addrs   [batchSize]uint64
	learn   learning
	pollFds []unix.PollFd
	// touched keeps touchHeaders' reads from being optimized away.
	touched byte
}

// loopPort is one port's socket on one loop.
type loopPort struct {
	id     uint32
	port   *Port
	net    *loopNet
	sock   *afxdp.Socket
	ctr    *portCounters
	txq    []afxdp.Desc
	broken bool
	// rules is the loop's handle on the port's rules.
	rules *policy.Matcher

	fillHeld int // frames in the fill ring or the kernel's rx path
	txHeld   int // frames in the tx ring or the kernel's completion path

	// rxWindow counts the frames received in the current rate window;
	// rate is the smoothed count per window and extra the frames beyond
	// the base share the port may hold for receiving (see fillShare).
	rxWindow, rate, extra int
}

// loopNet is a network as one loop sees it.
type loopNet struct {
	id      uint32
	fdb     *FDB
	rules   *policy.Matcher
	members []*loopPort
	// tunnel is the network's VXLAN side, nil for a network on this host
	// alone.
	tunnel *tunnel
}

func newLoop(queue int, swcfg Config, fill fillShare, broken chan<- *Port, log *slog.Logger) (*loop, error) {
	cfg := swcfg.Umem
	u, err := afxdp.NewUmem(cfg)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		u.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &loop{
		queue:   queue,
		umem:    u,
		pool:    newFramePool(u),
		log:     log.With("queue", queue),
		fill:    fill,
		reserve: reserveFrames(cfg.NumFrames),
		nets:    make(map[*Network]*loopNet),
		ctl:     make(chan func(), 16),
		wakeFd:  fd,
		done:    make(chan struct{}),
		broken:  broken,
		enc:     *vxlan.NewEncoder(),
		reasm:   frag.NewReassembler(frag.ReassemblerConfig{}),
		// Held fragments come out of the frames kept for transmit and
		// flood copies; a quarter of those is theirs at most.
		filter: newFilter(frag.TrackerConfig{MaxHeldFrames: cfg.NumFrames / 16, Timeout: swcfg.FragmentTimeout}),
	}
	l.fragNext = l.fragBuffer
	return l, nil
}

// do runs fn on the loop goroutine between batches and waits for it.
func (l *loop) do(fn func()) error {
	finished := make(chan struct{})
	wrapped := func() { fn(); close(finished) }
	select {
	case l.ctl <- wrapped:
	case <-l.done:
		return errLoopStopped
	}
	// Queued first, then the wake-up, so a loop woken from poll always
	// finds the work in runControl.
	one := [8]byte{1}
	_, _ = unix.Write(l.wakeFd, one[:])
	select {
	case <-finished:
		return nil
	case <-l.done:
		// The loop ended before it ran fn (it was stopping).
		select {
		case <-finished:
			return nil
		default:
			return errLoopStopped
		}
	}
}

func (l *loop) run() {
	defer close(l.done)
	for !l.stop {
		l.runControl()
		now := clock()
		if m := l.underlaySrc.Load(); m != nil {
			l.underlays = *m
		}
		if now-l.lastExpire > int64(time.Second) {
			// Datagrams whose fragments stopped coming free their memory
			// and frames.
			l.reasm.Expire(time.Now())
			l.expireFragments()
			l.pool.settle(now)
			l.lastExpire = now
		}
		if now-l.rateStart >= rateWindow {
			l.fill.update(l.active, now-l.rateStart)
			l.rateStart = now
		}
		work := 0
		for _, p := range l.active {
			if !p.broken {
				work += l.receive(p, now)
			}
		}
		// Each port's fill ring was topped up as its frames were taken,
		// so the kernel has frames to receive into during the slow
		// transmit below (in copy mode, sendto copies every frame and
		// runs the receiving device's NAPI on this CPU).
		l.flush()
		work += l.complete()
		l.refill()
		if work > 0 {
			l.flushRuleCounters()
		}
		if work == 0 {
			l.wait()
		}
	}
}

func (l *loop) runControl() {
	for {
		select {
		case fn := <-l.ctl:
			fn()
		default:
			return
		}
	}
}

// receive takes one batch from a port's rx ring and switches it; the
// frames are queued for transmit, for flush. It returns how many frames
// the ring gave.
func (l *loop) receive(p *loopPort, now int64) int {
	if p == l.uplink {
		return l.receiveTunnel(p, now)
	}
	n := p.sock.Receive(l.rx[:])
	if n == 0 {
		return 0
	}
	var rxPackets, rxBytes uint64
	sec := p.port.sec.Load()
	fdb := p.net.fdb
	fdb.mu.RLock()
	n = l.takeRx(p, n)
	l.touchHeaders(n)
	for i := range n {
		d := l.rx[i]
		f := l.umem.Bytes(d.Addr, int(d.Len))
		if f == nil {
			p.ctr.drop(DropInvalidDesc)
			l.pool.release(d.Addr)
			continue
		}
		rxPackets++
		rxBytes += uint64(d.Len)
		out, flood, reason, ok := decide(f, p.id, sec, fdb, now, &l.learn)
		if !ok {
			p.ctr.drop(reason)
			l.pool.release(d.Addr)
			continue
		}
		l.filter.view.parsed = false
		if l.judge(p.rules, p.net.rules, policy.In, ingressZone(p.id, p.net), p.ctr, d, f) {
			l.forward(p, p.net, d, f, out, flood)
		}
		if len(l.filter.given) > 0 {
			l.settle(p.net)
		}
	}
	fdb.mu.RUnlock()
	fdb.apply(&l.learn, now)
	p.ctr.rxPackets.Add(rxPackets)
	p.ctr.rxBytes.Add(rxBytes)
	return n
}

// forward sends a frame that passed its ingress stage where route said.
func (l *loop) forward(in *loopPort, ln *loopNet, d afxdp.Desc, f []byte, out fdbEntry, flood bool) {
	switch {
	case !flood && l.uplink != nil && out.port == l.uplink.id:
		l.sendTunnel(in, d, out.vtep)
	case !flood && int(out.port) < len(l.ports) && l.ports[out.port] != nil:
		l.output(l.ports[out.port], d, f)
	case in == l.uplink:
		// Split horizon: what came from the tunnel never goes back.
		l.floodMembers(ln, in, d, f)
	default:
		// Flood; also for an FDB entry whose port another loop has
		// learned but this one has not added yet, or has just removed
		// and is about to be flushed.
		l.flood(in, d, f)
	}
}

// output queues a frame for a local port once the port's rules let it out.
func (l *loop) output(m *loopPort, d afxdp.Desc, f []byte) {
	if l.judge(m.rules, nil, policy.Out, egressZone(m.id), m.ctr, d, f) {
		l.enqueue(m, d)
	}
}

// touchHeaders reads the first bytes of the n frames in l.rx before the
// batch is switched. The kernel wrote them on another CPU, so each first
// read misses the caches (about 100 ns on a VM); read one frame at a time
// in the decision, the misses come one after the other, while these
// independent reads let the CPU wait for many at once.
func (l *loop) touchHeaders(n int) {
	var x byte
	for _, d := range l.rx[:n] {
		if b := l.umem.Bytes(d.Addr, 1); b != nil {
			x ^= b[0]
		}
	}
	l.touched = x
}

// takeRx moves the n frames just received on p (l.rx[:n]) to the loop
// and tops the port's fill ring up again at once, before the batch is
// switched and transmitted: a frame the kernel finds in the fill ring
// while this loop is busy is a frame it does not drop. A descriptor that
// does not name a frame p's fill ring held is counted and left out; the
// good ones stay at the front of l.rx, and takeRx returns how many.
func (l *loop) takeRx(p *loopPort, n int) int {
	good := 0
	for _, d := range l.rx[:n] {
		if !l.pool.take(d.Addr, frameFill, p.id) {
			p.ctr.drop(DropInvalidDesc)
			continue
		}
		l.rx[good] = d
		good++
	}
	l.fill.held(p, -good)
	p.rxWindow += good
	l.refillPort(p)
	return good
}

// flood sends a frame to every other port of its network. The last
// destination gets the received frame itself and the others a copy: a frame
// is in one ring at a time, which keeps the frame accounting exact.
func (l *loop) flood(in *loopPort, d afxdp.Desc, f []byte) {
	if t := in.net.tunnel; t != nil {
		l.replicate(in, t, d, f)
	}
	l.floodMembers(in.net, in, d, f)
}

// floodMembers sends a frame to the network's local ports but in.
func (l *loop) floodMembers(net *loopNet, in *loopPort, d afxdp.Desc, f []byte) {
	members := net.members
	last := -1
	for i, m := range members {
		if m != in && !m.broken {
			last = i
		}
	}
	if last < 0 {
		l.pool.release(d.Addr)
		return
	}
	off := d.Addr % l.pool.frameSize
	for _, m := range members[:last] {
		if m == in || m.broken {
			continue
		}
		addr, ok := l.pool.alloc()
		if !ok {
			m.ctr.drop(DropNoFrame)
			continue
		}
		copy(l.umem.Bytes(addr+off, len(f)), f)
		l.output(m, afxdp.Desc{Addr: addr + off, Len: d.Len}, f)
	}
	l.output(members[last], d, f)
}

func (l *loop) enqueue(p *loopPort, d afxdp.Desc) {
	if len(p.txq) == 0 {
		l.dirty = append(l.dirty, p)
	}
	p.txq = append(p.txq, d)
}

// flush hands the batch's queued frames to the tx rings, one producer
// update and at most one kick per port.
func (l *loop) flush() {
	for _, p := range l.dirty {
		n := p.sock.Transmit(p.txq)
		var bytes uint64
		for _, d := range p.txq[:n] {
			l.pool.give(d.Addr, frameTx, p.id)
			bytes += uint64(d.Len)
		}
		for _, d := range p.txq[n:] {
			p.ctr.drop(DropTxRingFull)
			l.pool.release(d.Addr)
		}
		p.txHeld += n
		p.ctr.txPackets.Add(uint64(n))
		p.ctr.txBytes.Add(bytes)
		p.txq = p.txq[:0]
		if err := p.sock.Kick(); err != nil {
			p.ctr.txErrors.Add(1)
		}
	}
	l.dirty = l.dirty[:0]
}

// complete returns transmitted frames to the pool.
func (l *loop) complete() int {
	work := 0
	for _, p := range l.active {
		if p.txHeld == 0 {
			continue
		}
		n := p.sock.Complete(l.addrs[:])
		for _, addr := range l.addrs[:n] {
			if !l.pool.take(addr, frameTx, p.id) {
				p.ctr.drop(DropInvalidDesc)
				continue
			}
			l.pool.release(addr)
			p.txHeld--
		}
		work += n
	}
	return work
}

// refill tops every socket's fill ring up to its share.
func (l *loop) refill() {
	for _, p := range l.active {
		l.refillPort(p)
	}
}

// refillPort tops one socket's fill ring up to its share.
func (l *loop) refillPort(p *loopPort) {
	for !p.broken {
		want := min(l.fill.want(p), len(l.addrs), len(l.pool.free)-l.reserve)
		if want <= 0 {
			return
		}
		for i := range want {
			l.addrs[i], _ = l.pool.alloc()
		}
		n := p.sock.Fill(l.addrs[:want])
		for _, addr := range l.addrs[:n] {
			l.pool.give(addr, frameFill, p.id)
		}
		for _, addr := range l.addrs[n:want] {
			l.pool.release(addr)
		}
		l.fill.held(p, n)
		if n > 0 && p.sock.FillNeedsWakeup() {
			_ = p.sock.Wakeup()
		}
		if n < want {
			return
		}
	}
}

// wait blocks until a socket has frames or control work arrives. While
// frames are out for transmit or a fill ring is short, it wakes every
// millisecond to collect completions, which poll does not report.
func (l *loop) wait() {
	timeout := 1000
	for _, p := range l.active {
		if !p.broken && (p.txHeld > 0 || p.fillHeld < l.fill.base) {
			timeout = 1
			break
		}
	}
	l.pollFds = l.pollFds[:0]
	l.pollFds = append(l.pollFds, unix.PollFd{Fd: int32(l.wakeFd), Events: unix.POLLIN})
	for _, p := range l.active {
		if !p.broken {
			l.pollFds = append(l.pollFds, unix.PollFd{Fd: int32(p.sock.Fd()), Events: unix.POLLIN})
		}
	}
	n, err := unix.Poll(l.pollFds, timeout)
	if err != nil || n == 0 {
		return
	}
	if l.pollFds[0].Revents != 0 {
		var buf [8]byte
		_, _ = unix.Read(l.wakeFd, buf[:])
	}
	for _, fd := range l.pollFds[1:] {
		if fd.Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) == 0 {
			continue
		}
		for _, p := range l.active {
			if p.sock.Fd() == int(fd.Fd) && !p.broken {
				// The device went away under the socket. Stop using it
				// and ask the control plane to remove the port.
				p.broken = true
				l.log.Warn("port socket failed; removing the port", "port", p.port.Name)
				select {
				case l.broken <- p.port:
				default:
				}
			}
		}
	}
}

// addPort binds a socket for the port on this loop's queue and starts
// switching its frames. It runs on the loop goroutine.
func (l *loop) addPort(p *Port, cfg afxdp.SocketConfig) (*afxdp.Socket, error) {
	sock, err := l.umem.NewSocket(cfg)
	if err != nil {
		return nil, err
	}
	lp := &loopPort{
		id:    p.ID,
		port:  p,
		sock:  sock,
		ctr:   p.counters[l.queue],
		txq:   make([]afxdp.Desc, 0, batchSize),
		rules: p.rules.Matcher(),
	}
	if p.uplink {
		l.uplink = lp
	} else {
		ln := l.net(p.Network)
		lp.net = ln
		ln.members = append(ln.members, lp)
	}
	for int(p.ID) >= len(l.ports) {
		l.ports = append(l.ports, nil)
	}
	l.ports[p.ID] = lp
	l.active = append(l.active, lp)
	l.refill()
	return sock, nil
}

// removePort closes the port's socket and takes back every frame it held.
func (l *loop) removePort(id uint32) error {
	if int(id) >= len(l.ports) || l.ports[id] == nil {
		return nil
	}
	lp := l.ports[id]
	var settleAt int64
	if lp.sock.Mode() == afxdp.ModeZeroCopy {
		settleAt = clock() + int64(zeroCopySettle)
	}
	err := lp.sock.Close()
	l.pool.reclaim(id, settleAt)
	l.fill.held(lp, -lp.fillHeld)
	l.ports[id] = nil
	l.active = without(l.active, lp)
	// The port's datagrams go with it: its id may be handed to another
	// port, which must not inherit their verdicts or held fragments.
	l.filter.given = l.filter.tracker.Forget(func(zone uint32) bool {
		return zone&zonePortMask == id&zonePortMask
	}, frag.Drop, l.filter.given)
	l.settle(nil)
	if lp == l.uplink {
		l.uplink = nil
		return err
	}
	lp.net.members = without(lp.net.members, lp)
	if len(lp.net.members) == 0 && lp.net.tunnel == nil {
		delete(l.nets, lp.port.Network)
	}
	return err
}

// net is the loop's view of a network, made on first use.
func (l *loop) net(n *Network) *loopNet {
	ln := l.nets[n]
	if ln == nil {
		ln = &loopNet{id: n.id, fdb: n.fdb, rules: n.rules.Matcher()}
		l.nets[n] = ln
	}
	return ln
}

func without(ps []*loopPort, p *loopPort) []*loopPort {
	out := ps[:0]
	for _, q := range ps {
		if q != p {
			out = append(out, q)
		}
	}
	clear(ps[len(out):])
	return out
}

// account runs the frame accounting check on the loop goroutine.
func (l *loop) account() (FrameAccount, error) {
	held := make(map[uint32][2]int, len(l.active))
	for _, p := range l.active {
		held[p.id] = [2]int{p.fillHeld, p.txHeld}
	}
	var tracked []uint64
	for _, h := range l.filter.tracker.AppendHeld(nil) {
		tracked = append(tracked, h.Handle)
	}
	return l.pool.check(held, tracked)
}

// close stops the loop after closing every socket, then frees the UMEM.
func (l *loop) close() error {
	var errs []error
	err := l.do(func() {
		for _, p := range l.active {
			if err := p.sock.Close(); err != nil {
				errs = append(errs, err)
			}
			l.pool.reclaim(p.id, 0) // the UMEM goes too
			l.fill.held(p, -p.fillHeld)
		}
		l.active = nil
		l.stop = true
	})
	if err == nil {
		<-l.done
	}
	errs = append(errs, l.umem.Close(), unix.Close(l.wakeFd))
	return errors.Join(errs...)
}

// flushRuleCounters publishes what the batch counted against rules: the
// ports', and the networks' that frames enter by a local port or the
// tunnel (a network may be flushed twice; a clean Flush costs a length
// check).
func (l *loop) flushRuleCounters() {
	for _, p := range l.active {
		p.rules.Flush()
		if p.net != nil {
			p.net.rules.Flush()
		}
	}
	for _, n := range l.netByID {
		if n != nil {
			n.rules.Flush()
		}
	}
}

// portCounters are one port's counts on one loop. The loop adds to them
// once per batch; readers sum them over loops.
type portCounters struct {
	rxPackets, rxBytes, txPackets, txBytes, txErrors atomic.Uint64
	drops                                            [numDropReasons]atomic.Uint64
}

func (c *portCounters) drop(r DropReason) { c.drops[r].Add(1) }
