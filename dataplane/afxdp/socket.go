package afxdp

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SocketConfig says where a socket binds and how big its rx and tx rings are.
// Its fill and completion rings are sized by the UMEM's config.
type SocketConfig struct {
	Ifindex int
	Queue   int
	// Mode is honoured by the socket that registers the UMEM. A socket that
	// shares an already registered UMEM inherits the UMEM's mode (the kernel
	// allows no mode flags with XDP_SHARED_UMEM); asking it for ModeCopy or
	// ModeZeroCopy when the UMEM is in the other mode is an error, ModeAuto
	// accepts either.
	Mode Mode
	// NeedWakeup asks for XDP_USE_NEED_WAKEUP, so the kernel tells through
	// ring flags when a syscall is needed and the loop skips it otherwise.
	// Like Mode it is set by the registering socket and inherited by sockets
	// that share the UMEM; Kick and Wakeup follow the effective setting.
	NeedWakeup bool
	// RxRingSize and TxRingSize are powers of two, or 0 for no ring of that
	// kind; at least one must be non-zero.
	RxRingSize, TxRingSize int
}

// Socket is an AF_XDP socket bound to one device queue, with its own rx, tx,
// fill and completion rings over a shared Umem. Its methods are meant for the
// one goroutine that owns the queue and are not safe for concurrent use.
type Socket struct {
	umem       *Umem
	fd         int
	ifindex    int
	queue      int
	dev        string // device name for error messages
	mode       Mode
	needWakeup bool // effective XDP_USE_NEED_WAKEUP
	registered bool // this socket did XDP_UMEM_REG (tests look at it)
	unbound    bool // the kernel refused to share through it: its device is gone

	rx, tx     *ring[Desc]
	fill, comp *ring[uint64]
	kickRounds int
}

// NewSocket creates an AF_XDP socket on cfg.Ifindex/cfg.Queue over the UMEM.
//
// If another socket of this UMEM is bound, the new one binds with
// XDP_SHARED_UMEM through it; it still gets its own fill and completion rings
// because the kernel requires that for a different device or queue, and
// because each device queue's loop must own its rings. Any bound socket will
// do: the one that registered may be gone (its device vanished), the kernel
// keeps the UMEM alive while any socket uses it. If none is bound, the new
// socket registers the UMEM (XDP_UMEM_REG) itself.
//
// On failure everything created so far is closed and unmapped and the UMEM is
// left as it was.
func (u *Umem) NewSocket(cfg SocketConfig) (*Socket, error) {
	if err := validateSocketConfig(cfg); err != nil {
		return nil, err
	}
	dev := devName(cfg.Ifindex)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, fmt.Errorf("afxdp: socket on %s queue %d: %w", dev, cfg.Queue, errUmemClosed)
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("afxdp: create socket for %s queue %d: %w", dev, cfg.Queue, err)
	}
	s := &Socket{umem: u, fd: fd, ifindex: cfg.Ifindex, queue: cfg.Queue, dev: dev}
	if err := s.setup(cfg); err != nil {
		s.release()
		return nil, err
	}
	u.register(s)
	return s, nil
}

func validateSocketConfig(cfg SocketConfig) error {
	switch {
	case cfg.Ifindex <= 0:
		return fmt.Errorf("afxdp: socket config: ifindex %d: must be positive", cfg.Ifindex)
	case cfg.Queue < 0 || cfg.Queue > 0xffff:
		return fmt.Errorf("afxdp: socket config: queue %d: out of range", cfg.Queue)
	case !cfg.Mode.valid():
		return fmt.Errorf("afxdp: socket config: invalid mode %v", cfg.Mode)
	case cfg.RxRingSize == 0 && cfg.TxRingSize == 0:
		return errors.New("afxdp: socket config: need an rx ring, a tx ring or both")
	case cfg.RxRingSize != 0 && !isPow2(cfg.RxRingSize):
		return fmt.Errorf("afxdp: socket config: RxRingSize %d: must be a power of two or 0", cfg.RxRingSize)
	case cfg.TxRingSize != 0 && !isPow2(cfg.TxRingSize):
		return fmt.Errorf("afxdp: socket config: TxRingSize %d: must be a power of two or 0", cfg.TxRingSize)
	}
	return nil
}

// devName names the device for error messages; it falls back to the index
// when the device does not exist (which is often why there is an error).
func devName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return ifi.Name
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

// setup creates the rings, maps them and binds; the caller holds u.mu and
// releases the socket if setup fails.
func (s *Socket) setup(cfg SocketConfig) error {
	u := s.umem
	where := fmt.Sprintf("%s queue %d", s.dev, s.queue)
	rings := []struct {
		opt, size int
		name      string
	}{
		{unix.XDP_RX_RING, cfg.RxRingSize, "rx"},
		{unix.XDP_TX_RING, cfg.TxRingSize, "tx"},
		{unix.XDP_UMEM_FILL_RING, u.cfg.FillRingSize, "fill"},
		{unix.XDP_UMEM_COMPLETION_RING, u.cfg.CompletionRingSize, "completion"},
	}
	for _, r := range rings {
		if r.size == 0 {
			continue
		}
		if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, r.opt, r.size); err != nil {
			return fmt.Errorf("afxdp: set %s ring size %d on %s: %w", r.name, r.size, where, err)
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(s.fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fmt.Errorf("afxdp: get mmap offsets on %s: %w", where, err)
	}
	var err error
	if cfg.RxRingSize > 0 {
		if s.rx, err = mapRing[Desc](s.fd, unix.XDP_PGOFF_RX_RING, off.Rx, cfg.RxRingSize, false); err != nil {
			return fmt.Errorf("afxdp: mmap rx ring on %s: %w", where, err)
		}
	}
	if cfg.TxRingSize > 0 {
		if s.tx, err = mapRing[Desc](s.fd, unix.XDP_PGOFF_TX_RING, off.Tx, cfg.TxRingSize, true); err != nil {
			return fmt.Errorf("afxdp: mmap tx ring on %s: %w", where, err)
		}
	}
	if s.fill, err = mapRing[uint64](s.fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, u.cfg.FillRingSize, true); err != nil {
		return fmt.Errorf("afxdp: mmap fill ring on %s: %w", where, err)
	}
	if s.comp, err = mapRing[uint64](s.fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, u.cfg.CompletionRingSize, false); err != nil {
		return fmt.Errorf("afxdp: mmap completion ring on %s: %w", where, err)
	}

	if err := s.bind(cfg); err != nil {
		return err
	}

	// In copy mode the kernel sends at most this many frames per sendto
	// (32 by default). Raising it to the ring size lets one Kick flush the
	// ring. The kernel requires 32 <= budget <= tx ring size, and kernels
	// before 6.17 lack the option; either way the default stays and Kick
	// loops instead, so failure is ignored.
	if cfg.TxRingSize > txBatch {
		_ = unix.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, cfg.TxRingSize)
	}
	s.kickRounds = cfg.TxRingSize/txBatch + 2

	opts, err := unix.GetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_OPTIONS)
	if err != nil {
		return fmt.Errorf("afxdp: get options on %s: %w", where, err)
	}
	s.mode = ModeCopy
	if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		s.mode = ModeZeroCopy
	}
	if (cfg.Mode == ModeCopy || cfg.Mode == ModeZeroCopy) && cfg.Mode != s.mode {
		return fmt.Errorf("afxdp: bind %s: mode %v requested but the shared UMEM is in %v mode (set by the socket that registered it)", where, cfg.Mode, s.mode)
	}
	return nil
}

// txBatch is the kernel's default copy-mode transmit budget per sendto
// (TX_BATCH_SIZE in net/xdp/xsk.c).
const txBatch = 32

// bind binds the socket, sharing the UMEM through a bound socket if there is
// one and registering it otherwise.
func (s *Socket) bind(cfg SocketConfig) error {
	u := s.umem
	for _, o := range u.sockets {
		// The kernel would refuse this with a bare EINVAL: sockets on one
		// queue would have to share one fill and completion ring pair,
		// which this package never does.
		if !o.unbound && o.ifindex == s.ifindex && o.queue == s.queue {
			return fmt.Errorf("afxdp: bind %s queue %d: the queue already has a socket of this UMEM", s.dev, s.queue)
		}
	}
	for _, o := range u.sockets {
		if o.unbound {
			continue
		}
		err := bindRetry(s.fd, &unix.SockaddrXDP{
			Flags:        unix.XDP_SHARED_UMEM,
			Ifindex:      uint32(s.ifindex),
			QueueID:      uint32(s.queue),
			SharedUmemFD: uint32(o.fd),
		})
		if err == nil {
			s.needWakeup = o.needWakeup
			return nil
		}
		// EBADF: the kernel no longer counts o as bound (its device was
		// unregistered). The bind failed before touching our socket, so
		// try the next one.
		if errors.Is(err, unix.EBADF) {
			o.unbound = true
			continue
		}
		return fmt.Errorf("afxdp: bind %s queue %d sharing the UMEM of %s queue %d: %w", s.dev, s.queue, o.dev, o.queue, err)
	}

	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptr(unsafe.Pointer(&u.mem[0]))),
		Len:      uint64(len(u.mem)),
		Size:     uint32(u.cfg.FrameSize),
		Headroom: uint32(u.cfg.Headroom),
	}
	if err := setsockopt(s.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("afxdp: register umem (%d frames of %d) on %s queue %d: %w", u.cfg.NumFrames, u.cfg.FrameSize, s.dev, s.queue, err)
	}
	s.registered = true
	var flags uint16
	switch cfg.Mode {
	case ModeCopy:
		flags |= unix.XDP_COPY
	case ModeZeroCopy:
		flags |= unix.XDP_ZEROCOPY
	}
	if cfg.NeedWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	err := bindRetry(s.fd, &unix.SockaddrXDP{
		Flags:   flags,
		Ifindex: uint32(s.ifindex),
		QueueID: uint32(s.queue),
	})
	if err != nil {
		return fmt.Errorf("afxdp: bind %s queue %d mode %v: %w", s.dev, s.queue, cfg.Mode, err)
	}
	s.needWakeup = cfg.NeedWakeup
	return nil
}

// busyRetry bounds how long bind keeps retrying EBUSY.
var busyRetry = 2 * time.Second

// bindRetry binds, retrying while the kernel answers EBUSY. A device queue
// takes one UMEM pool, and the pool of a socket closed moments ago is only
// released after an RCU grace period and a workqueue run; until then binding
// a new socket to that queue fails with EBUSY. That happens every time a
// port's socket is re-created, so it is waited out here rather than made the
// caller's problem. A failed bind leaves the socket ready to bind again. A
// queue that stays busy (a live socket of another UMEM holds it) still fails,
// after busyRetry.
func bindRetry(fd int, sa *unix.SockaddrXDP) error {
	deadline := time.Now().Add(busyRetry)
	wait := time.Millisecond
	for {
		err := unix.Bind(fd, sa)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("queue still busy after %v (another AF_XDP socket is bound to it): %w", busyRetry, err)
			}
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// release unmaps the rings and closes the fd, returning the errors met.
func (s *Socket) release() error {
	var errs []error
	for _, r := range []*ring[Desc]{s.rx, s.tx} {
		if err := r.unmap(); err != nil {
			errs = append(errs, fmt.Errorf("munmap ring: %w", err))
		}
	}
	for _, r := range []*ring[uint64]{s.fill, s.comp} {
		if err := r.unmap(); err != nil {
			errs = append(errs, fmt.Errorf("munmap ring: %w", err))
		}
	}
	// Nil rings make every ring method a harmless no-op after Close.
	s.rx, s.tx, s.fill, s.comp = nil, nil, nil, nil
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, fmt.Errorf("close: %w", err))
		}
		s.fd = -1
	}
	return errors.Join(errs...)
}

// Close unmaps the rings and closes the socket. The kernel removes it from
// any XSKMAP. The UMEM stays usable by its other sockets (the kernel's UMEM
// lives while any socket holds it). Closing twice is a no-op.
func (s *Socket) Close() error {
	u := s.umem
	u.mu.Lock()
	defer u.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	u.forget(s)
	if err := s.release(); err != nil {
		return fmt.Errorf("afxdp: close socket on %s queue %d: %w", s.dev, s.queue, err)
	}
	return nil
}

// Fd returns the socket's file descriptor, for an XSKMAP and for poll; -1
// after Close.
func (s *Socket) Fd() int { return s.fd }

// Ifindex returns the device the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// Queue returns the device queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// Mode returns the mode the kernel actually chose: ModeCopy or ModeZeroCopy,
// never ModeAuto.
func (s *Socket) Mode() Mode { return s.mode }

// Receive copies up to len(descs) descriptors out of the rx ring and
// releases their slots; it returns how many. The frames now belong to the
// caller until they go back on a fill ring or out through a tx ring.
func (s *Socket) Receive(descs []Desc) int {
	if s.rx == nil {
		return 0
	}
	return s.rx.consume(descs)
}

// FillFree returns how many addresses the fill ring can take now.
func (s *Socket) FillFree() int {
	if s.fill == nil {
		return 0
	}
	return int(s.fill.free(s.fill.size))
}

// Fill puts as many of addrs as fit on the fill ring, for the kernel to
// receive into, and returns how many it took.
func (s *Socket) Fill(addrs []uint64) int {
	if s.fill == nil {
		return 0
	}
	return s.fill.produce(addrs)
}

// FillNeedsWakeup reports whether the kernel asked (with XDP_USE_NEED_WAKEUP)
// to be woken to receive, which a zero-copy driver does when its fill ring
// ran dry; see Wakeup.
func (s *Socket) FillNeedsWakeup() bool {
	if s.fill == nil {
		return false
	}
	return s.fill.needsWakeup()
}

// TxFree returns how many descriptors the tx ring can take now.
func (s *Socket) TxFree() int {
	if s.tx == nil {
		return 0
	}
	return int(s.tx.free(s.tx.size))
}

// Transmit puts as many of descs as fit on the tx ring, published with one
// store of the producer index, and returns how many. Nothing is sent until
// Kick (or a poll for POLLOUT).
func (s *Socket) Transmit(descs []Desc) int {
	if s.tx == nil {
		return 0
	}
	return s.tx.produce(descs)
}

// TxPending returns how many descriptors were put on the tx ring that the
// kernel has not taken yet.
func (s *Socket) TxPending() int {
	if s.tx == nil {
		return 0
	}
	return int(s.tx.outstanding())
}

// Kick asks the kernel to transmit what is on the tx ring: a non-blocking
// sendto with no data, made only if there is something pending and (with
// need-wakeup in effect) the kernel set the tx ring's need-wakeup flag.
//
// In copy mode the kernel transmits synchronously inside sendto, at most a
// budget of frames per call, answering EAGAIN when frames are left; so Kick
// calls again while the ring still holds frames and the previous call made
// progress, a bounded number of times. EAGAIN, EBUSY, ENOBUFS and ENETDOWN
// mean "not now" (full device queue, full completion ring, device down):
// the frames stay on the ring for the next Kick, and Kick returns nil. Other
// errors (ENXIO: the device vanished) are returned.
//
// The sendto is made with RawSyscall6, without telling the Go scheduler
// (entersyscall/exitsyscall). That is safe because an AF_XDP sendto with
// MSG_DONTWAIT never waits for an event: the kernel refuses a blocking one
// (EOPNOTSUPP), allocates its skbs without blocking and answers EAGAIN or
// ENOBUFS instead of waiting for room. It can run long (copy mode
// transmits the whole budget synchronously, a few µs a frame) and may
// briefly sleep on the socket's mutex, but it always returns on its own.
// Meanwhile the calling goroutine keeps its P: no other goroutine runs
// in its place, which is what the switching loop wants. With the
// scheduler told, a sendto longer than sysmon's 20 µs tick had the P
// taken away and handed over, and the loop then waited for it to come
// back after the syscall: thread handoffs and futex wake-ups on every
// batch, and on a single-CPU daemon, delays of milliseconds while another
// goroutine ran, during which the receive side ran out of frames.
func (s *Socket) Kick() error {
	t := s.tx
	if t == nil {
		return nil
	}
	pending := t.outstanding()
	for round := 0; pending > 0 && round < s.kickRounds; round++ {
		if s.needWakeup && !t.needsWakeup() {
			return nil
		}
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
		default:
			return fmt.Errorf("afxdp: kick tx on %s queue %d: %w", s.dev, s.queue, e)
		}
		if s.mode == ModeZeroCopy {
			// The driver transmits asynchronously from its NAPI
			// context; one wakeup is all it needs.
			return nil
		}
		now := t.outstanding()
		if now >= pending {
			return nil
		}
		pending = now
	}
	return nil
}

// Complete copies up to len(addrs) addresses of transmitted frames out of the
// completion ring and releases their slots; it returns how many. Each
// address is the Addr of the tx descriptor, as given to Transmit.
func (s *Socket) Complete(addrs []uint64) int {
	if s.comp == nil {
		return 0
	}
	return s.comp.consume(addrs)
}

// Wakeup wakes a zero-copy driver's receive path with a non-blocking
// recvfrom, for loops that do not poll; it does so only when need-wakeup is
// off or the fill ring's need-wakeup flag is set. In copy mode frames are
// copied in by the XDP program's redirect and nothing needs waking, so it
// does nothing. "Not now" errors are not errors, as for Kick.
func (s *Socket) Wakeup() error {
	if s.rx == nil || s.mode != ModeZeroCopy {
		return nil
	}
	if s.needWakeup && !s.fill.needsWakeup() {
		return nil
	}
	// Non-blocking, like Kick's sendto, and raw for the same reasons.
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.ENETDOWN:
		return nil
	}
	return fmt.Errorf("afxdp: wake rx on %s queue %d: %w", s.dev, s.queue, e)
}

// Statistics are the kernel's per-socket counters (struct xdp_statistics).
type Statistics struct {
	RxDropped            uint64 // frames dropped for lack of a fill-ring frame or too big
	RxInvalidDescs       uint64 // invalid descriptors on the rx side
	TxInvalidDescs       uint64 // invalid descriptors given to the tx ring
	RxRingFull           uint64 // frames dropped because the rx ring was full
	RxFillRingEmptyDescs uint64 // times the fill ring was found empty
	TxRingEmptyDescs     uint64 // times the tx ring was found empty
}

// Statistics reads the socket's counters with getsockopt(XDP_STATISTICS).
// Kernels before 5.9 return only the first three fields (and count a full rx
// ring in RxDropped); the others then read 0.
func (s *Socket) Statistics() (Statistics, error) {
	var raw unix.XDPStatistics
	n, err := getsockoptLen(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&raw), unsafe.Sizeof(raw))
	if err != nil {
		return Statistics{}, fmt.Errorf("afxdp: get statistics on %s queue %d: %w", s.dev, s.queue, err)
	}
	st := Statistics{
		RxDropped:      raw.Rx_dropped,
		RxInvalidDescs: raw.Rx_invalid_descs,
		TxInvalidDescs: raw.Tx_invalid_descs,
	}
	if n >= unsafe.Sizeof(raw) {
		st.RxRingFull = raw.Rx_ring_full
		st.RxFillRingEmptyDescs = raw.Rx_fill_ring_empty_descs
		st.TxRingEmptyDescs = raw.Tx_ring_empty_descs
	}
	return st, nil
}

// setsockopt sets a SOL_XDP option from a struct; x/sys has no typed helper
// for XDP's structs.
func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// getsockopt reads a SOL_XDP option into a struct.
func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, err := getsockoptLen(fd, opt, p, size)
	return err
}

// getsockoptLen reads a SOL_XDP option and returns the length the kernel
// wrote, which tells which version of a grown struct it knows.
func getsockoptLen(fd, opt int, p unsafe.Pointer, size uintptr) (uintptr, error) {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return uintptr(l), nil
}
