package afxdp

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// UmemConfig sizes a UMEM and the fill and completion rings each of its
// sockets gets.
type UmemConfig struct {
	// NumFrames is the number of chunks in the UMEM.
	NumFrames int
	// FrameSize is the chunk size: a power of two from 2048 to the page size
	// (2048 or 4096 on x86), because the UMEM is registered in aligned mode.
	FrameSize int
	// Headroom is XDP_UMEM_REG's headroom: bytes the kernel leaves free at the
	// start of every received frame, in addition to its own
	// XDP_PACKET_HEADROOM (256). Room to prepend tunnel headers in place.
	Headroom int
	// FillRingSize and CompletionRingSize size the fill and completion rings
	// that every socket of the UMEM gets for itself; powers of two.
	FillRingSize, CompletionRingSize int
}

// DefaultUmemConfig returns 4096 frames of 2048 bytes (8 MiB), no extra
// headroom, and fill and completion rings of 2048 entries: enough for a few
// ports' rings to be full at once without running out of frames.
func DefaultUmemConfig() UmemConfig {
	return UmemConfig{
		NumFrames:          4096,
		FrameSize:          2048,
		Headroom:           0,
		FillRingSize:       2048,
		CompletionRingSize: 2048,
	}
}

// minFrameSize is the kernel's XDP_UMEM_MIN_CHUNK_SIZE.
const minFrameSize = 2048

// validate reports the first problem with the configuration, in the terms an
// operator can fix, before the kernel answers a bare EINVAL.
func (c UmemConfig) validate() error {
	page := os.Getpagesize()
	switch {
	case c.NumFrames <= 0:
		return fmt.Errorf("afxdp: umem config: NumFrames %d: need at least one frame", c.NumFrames)
	case c.NumFrames > math.MaxUint32:
		return fmt.Errorf("afxdp: umem config: NumFrames %d: more than the kernel's 2^32-1 chunks", c.NumFrames)
	case !isPow2(c.FrameSize) || c.FrameSize < minFrameSize || c.FrameSize > page:
		return fmt.Errorf("afxdp: umem config: FrameSize %d: must be a power of two from %d to the page size %d", c.FrameSize, minFrameSize, page)
	case c.Headroom < 0 || c.Headroom >= c.FrameSize-unix.XDP_PACKET_HEADROOM:
		return fmt.Errorf("afxdp: umem config: Headroom %d: must be from 0 to below FrameSize %d minus the kernel's %d bytes of XDP headroom", c.Headroom, c.FrameSize, unix.XDP_PACKET_HEADROOM)
	case !isPow2(c.FillRingSize):
		return fmt.Errorf("afxdp: umem config: FillRingSize %d: must be a power of two", c.FillRingSize)
	case !isPow2(c.CompletionRingSize):
		return fmt.Errorf("afxdp: umem config: CompletionRingSize %d: must be a power of two", c.CompletionRingSize)
	}
	if hi, lo := bits.Mul64(uint64(c.NumFrames), uint64(c.FrameSize)); hi != 0 || lo > math.MaxInt {
		return fmt.Errorf("afxdp: umem config: %d frames of %d bytes overflow the address space", c.NumFrames, c.FrameSize)
	}
	return nil
}

// Umem is the packet memory shared by a set of AF_XDP sockets, typically one
// per device queue of every port, so that a frame received on one port is
// transmitted on another by handing over its address.
//
// The memory is an anonymous private mapping owned by this process. The
// kernel's UMEM object is created by the first socket (XDP_UMEM_REG) and kept
// alive by reference counting while any socket bound to it exists; later
// sockets attach to it with XDP_SHARED_UMEM. When all sockets are gone, the
// next socket registers the same memory anew.
type Umem struct {
	mem   []byte
	cfg   UmemConfig
	shift uint   // log2(FrameSize)
	off   uint64 // FrameSize-1: offset-in-chunk mask

	mu      sync.Mutex
	sockets []*Socket // open sockets, oldest first
	closed  bool
}

// NewUmem maps the UMEM's memory, in huge pages where the kernel gives them:
// the loop touches frames all over the UMEM, and with 4 KiB pages nearly
// every frame's first byte costs a TLB miss (a two-level page walk in a
// VM). Every page is faulted in now, so the kernel's pinning at
// registration and the first frames do not page-fault.
func NewUmem(cfg UmemConfig) (*Umem, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	size := cfg.NumFrames * cfg.FrameSize
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("afxdp: mmap umem of %d bytes: %w", size, err)
	}
	// Both are advice: without transparent huge pages the UMEM works
	// in small pages, and without MADV_POPULATE_WRITE (Linux 5.14) a
	// write to every page faults them in.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	if unix.Madvise(mem, unix.MADV_POPULATE_WRITE) != nil {
		for i := 0; i < len(mem); i += os.Getpagesize() {
			mem[i] = 0
		}
	}
	return &Umem{
		mem:   mem,
		cfg:   cfg,
		shift: uint(bits.TrailingZeros(uint(cfg.FrameSize))),
		off:   uint64(cfg.FrameSize - 1),
	}, nil
}

// Close unmaps the memory. It fails while sockets of the UMEM are open: the
// kernel would keep their rings pointing at pages this process no longer
// sees, and frames in flight would be lost silently. Closing twice is a no-op.
func (u *Umem) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	if n := len(u.sockets); n > 0 {
		return fmt.Errorf("afxdp: close umem: %d sockets still open on it", n)
	}
	u.closed = true
	mem := u.mem
	u.mem = nil
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("afxdp: munmap umem: %w", err)
	}
	return nil
}

// NumFrames returns the number of chunks.
func (u *Umem) NumFrames() int { return u.cfg.NumFrames }

// FrameSize returns the chunk size.
func (u *Umem) FrameSize() int { return u.cfg.FrameSize }

// Headroom returns the configured extra headroom (beyond XDP_PACKET_HEADROOM).
func (u *Umem) Headroom() int { return u.cfg.Headroom }

// FrameAddr returns the UMEM address of chunk i, the address to put on a
// fill ring. It does not check i; FrameIndex is its inverse.
func (u *Umem) FrameAddr(i int) uint64 { return uint64(i) << u.shift }

// FrameIndex returns the chunk an address falls in. Descriptors point inside
// their chunk (past the headroom), so this is how a received or completed
// address is mapped back to the frame it owns.
func (u *Umem) FrameIndex(addr uint64) int { return int(addr >> u.shift) }

// Bytes returns the n bytes of UMEM at [addr, addr+n), sharing the memory (no
// copy). It returns nil if the range is outside the UMEM or crosses the end of
// addr's chunk: frames never span chunks, so such a request is a bug. The
// slice's capacity ends at addr+n, so an append can never scribble on the next
// chunk.
func (u *Umem) Bytes(addr uint64, n int) []byte {
	if n < 0 || addr >= uint64(len(u.mem)) || (addr&u.off)+uint64(n) > u.off+1 {
		return nil
	}
	end := addr + uint64(n)
	return u.mem[addr:end:end]
}

// register adds a bound socket to the UMEM's list.
func (u *Umem) register(s *Socket) {
	u.sockets = append(u.sockets, s)
}

// forget removes a socket from the list; the caller holds u.mu.
func (u *Umem) forget(s *Socket) {
	for i, o := range u.sockets {
		if o == s {
			copy(u.sockets[i:], u.sockets[i+1:])
			u.sockets[len(u.sockets)-1] = nil
			u.sockets = u.sockets[:len(u.sockets)-1]
			return
		}
	}
}

var errUmemClosed = errors.New("umem is closed")
