package afxdp

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is a view of one of the single-producer single-consumer rings the
// kernel shares with a socket through mmap: rx and tx carry Desc entries,
// fill and completion carry UMEM addresses (uint64).
//
// producer and consumer are free-running uint32 indices; an entry lives at
// index&mask. The side this process owns is kept in cachedProd (for rings we
// produce into) or cachedCons (for rings we consume from) and published with
// an atomic store after the entries are written or read. The kernel's side is
// cached too and re-read only when the cached view runs out, as libxdp's
// xsk_prod_nb_free/xsk_cons_nb_avail do: the kernel's index sits on a cache
// line the kernel keeps writing, so reading it per descriptor would cost a
// cache miss per frame.
//
// For a ring we produce into, cachedCons holds the consumer index plus the
// ring size, so cachedCons-cachedProd is the number of free slots.
type ring[T Desc | uint64] struct {
	mem        []byte // the whole mapping, kept for munmap
	producer   *uint32
	consumer   *uint32
	flags      *uint32
	entries    []T
	mask       uint32
	size       uint32
	cachedProd uint32
	cachedCons uint32
}

// mapRing maps the ring of the given kind at pgoff on fd, using the offsets
// the kernel reported with XDP_MMAP_OFFSETS (they are not a stable ABI, which
// is why the kernel reports them). produce says whether this process is the
// ring's producer (fill, tx) or its consumer (rx, completion).
func mapRing[T Desc | uint64](fd int, pgoff int64, off unix.XDPRingOffset, size int, produce bool) (*ring[T], error) {
	var zero T
	esz := uint64(unsafe.Sizeof(zero))
	length := off.Desc + uint64(size)*esz
	// Sanity-check the offsets before turning them into pointers: a bad
	// offset would otherwise become a fault on the first access.
	for _, o := range []uint64{off.Producer, off.Consumer, off.Flags} {
		if o%4 != 0 || o+4 > off.Desc {
			return nil, fmt.Errorf("kernel reported unusable ring offsets %+v", off)
		}
	}
	if off.Desc%8 != 0 {
		return nil, fmt.Errorf("kernel reported unusable ring offsets %+v", off)
	}
	mem, err := unix.Mmap(fd, pgoff, int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, err
	}
	r := newRing(
		(*uint32)(unsafe.Pointer(&mem[off.Producer])),
		(*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		(*uint32)(unsafe.Pointer(&mem[off.Flags])),
		unsafe.Slice((*T)(unsafe.Pointer(&mem[off.Desc])), size),
		produce)
	r.mem = mem
	return r, nil
}

// newRing builds the view over ring memory (mapped, or plain memory in unit
// tests) and takes the current indices as the starting cached view.
func newRing[T Desc | uint64](producer, consumer, flags *uint32, entries []T, produce bool) *ring[T] {
	r := &ring[T]{
		producer: producer,
		consumer: consumer,
		flags:    flags,
		entries:  entries,
		mask:     uint32(len(entries) - 1),
		size:     uint32(len(entries)),
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer)
	if produce {
		r.cachedCons += r.size
	}
	return r
}

// unmap releases the mapping. The ring must not be used afterwards.
func (r *ring[T]) unmap() error {
	if r == nil || r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem, r.entries, r.producer, r.consumer, r.flags = nil, nil, nil, nil, nil
	return err
}

// free returns the number of slots a producer may fill, re-reading the
// kernel's consumer index only when the cached view has fewer than want.
func (r *ring[T]) free(want uint32) uint32 {
	n := r.cachedCons - r.cachedProd
	if n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size
	return r.cachedCons - r.cachedProd
}

// avail returns up to want entries ready for the consumer, re-reading the
// kernel's producer index only when the cached view is empty.
func (r *ring[T]) avail(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n == 0 {
		r.cachedProd = atomic.LoadUint32(r.producer)
		n = r.cachedProd - r.cachedCons
	}
	return min(n, want)
}

// clampLen turns a slice length into a ring-sized request.
func (r *ring[T]) clampLen(n int) uint32 {
	if n > int(r.size) {
		return r.size
	}
	return uint32(n)
}

// produce writes as many of src as fit and publishes them with one store of
// the producer index. It returns how many were written.
func (r *ring[T]) produce(src []T) int {
	want := r.clampLen(len(src))
	if want == 0 {
		return 0
	}
	n := min(r.free(want), want)
	if n == 0 {
		return 0
	}
	start := r.cachedProd & r.mask
	first := min(n, r.size-start)
	copy(r.entries[start:start+first], src[:first])
	copy(r.entries[:n-first], src[first:n])
	r.cachedProd += n
	// Release: the entries above become visible before the new index.
	atomic.StoreUint32(r.producer, r.cachedProd)
	return int(n)
}

// consume copies up to len(dst) entries out and releases their slots to the
// kernel with one store of the consumer index. It returns how many.
func (r *ring[T]) consume(dst []T) int {
	want := r.clampLen(len(dst))
	if want == 0 {
		return 0
	}
	n := r.avail(want)
	if n == 0 {
		return 0
	}
	start := r.cachedCons & r.mask
	first := min(n, r.size-start)
	copy(dst[:first], r.entries[start:start+first])
	copy(dst[first:n], r.entries[:n-first])
	r.cachedCons += n
	// Release: we are done reading the entries before the kernel may
	// overwrite them.
	atomic.StoreUint32(r.consumer, r.cachedCons)
	return int(n)
}

// outstanding returns how many entries we produced that the kernel has not
// consumed yet. It always reads the kernel's index: callers use it to decide
// whether a transmit made progress.
func (r *ring[T]) outstanding() uint32 {
	return r.cachedProd - atomic.LoadUint32(r.consumer)
}

// needsWakeup reports whether the kernel set XDP_RING_NEED_WAKEUP on the ring.
func (r *ring[T]) needsWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}
