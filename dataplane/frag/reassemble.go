package frag

import (
	"encoding/binary"
	"sync/atomic"
	"time"
)

// ReassemblerConfig bounds a Reassembler. Zero fields take the defaults.
type ReassemblerConfig struct {
	// MaxBytes caps the memory holding fragments, over all datagrams
	// (default 4 MiB). Bytes are held in chunks of 256, so a fragment
	// costs its length rounded up to 256. When full, the datagrams that
	// have waited longest are dropped to make room. A datagram larger
	// than MaxBytes can never be reassembled.
	MaxBytes int
	// MaxDatagrams caps the datagrams in reassembly at once (default
	// 1024); when full, the oldest is dropped to make room.
	MaxDatagrams int
	// Timeout is how long a datagram may take to complete, from its
	// first fragment to arrive (default 30 s).
	Timeout time.Duration
	// MaxDatagramSize caps the reassembled packet's length, IP header
	// included. Zero means the protocol's own limit: 65535 for IPv4,
	// 40 + 65535 for IPv6.
	MaxDatagramSize int
	// MaxFragments caps the fragments of one datagram (default 64: a
	// 64 KiB datagram over a 1280-byte MTU needs 54).
	MaxFragments int
}

// Reassembler defaults.
const (
	DefaultReassemblyBytes     = 4 << 20
	DefaultReassemblyDatagrams = 1024
	DefaultMaxFragments        = 64
)

const (
	chunkSize   = 256
	blockChunks = 256 // chunks per allocation: 64 KiB
)

func (c *ReassemblerConfig) normalize() {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultReassemblyBytes
	}
	c.MaxBytes = max(min(c.MaxBytes, 1<<30), chunkSize)
	if c.MaxDatagrams <= 0 {
		c.MaxDatagrams = DefaultReassemblyDatagrams
	}
	c.MaxDatagrams = min(c.MaxDatagrams, 1<<22)
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxDatagramSize < 0 {
		c.MaxDatagramSize = 0
	}
	if c.MaxFragments <= 0 {
		c.MaxFragments = DefaultMaxFragments
	}
	c.MaxFragments = min(c.MaxFragments, 8192)
}

// slot is one datagram in reassembly, or one remembered as dropped.
type slot struct {
	when     int64
	state    uint8 // stateFree, statePending (in reassembly), stateBad
	reason   Reason
	hasFirst bool
	hasLast  bool
	ecn      uint8 // the ECN codepoints seen, one bit each
	fragNH   uint8 // IPv6: the Next Header of the first fragment's Fragment header
	end      uint32
	maxEnd   uint32
	covered  uint32 // bytes of the fragmentable part held
	nfrags   int32
	frags    int32 // fragments, sorted by offset; -1 for none
	hdr      int32 // first chunk of the first fragment's header
	hdrLen   int32
	nhOff    int32 // IPv6: where the Next Header byte naming the Fragment header is
	chunks   int32
}

// piece is one fragment's bytes.
type piece struct {
	off, end uint32
	chunk    int32 // first chunk of its bytes
	next     int32 // next fragment by offset
}

// Reassembler puts fragmented IPv4 and IPv6 datagrams back together, for
// tunnel packets that the underlay fragmented (the switch must decap whole
// packets). It copies what it keeps, so the caller's frame is free again
// as soon as Add returns. It is bounded in memory (MaxBytes, allocated in
// 64 KiB blocks as needed and then reused), in datagrams (MaxDatagrams) and
// in time (Timeout). It is owned by one goroutine; only Stats may be called
// from others.
//
// Rules: fragments that overlap drop the whole datagram, and the
// datagram's fragments still to come are dropped until the timeout (RFC
// 5722, applied to IPv4 as well). An exact duplicate (same offset, same
// length, same bytes) is ignored and the datagram goes on (RFC 8200 §4.5
// allows either); a duplicate whose bytes differ is an overlap. Fragments
// that disagree on the datagram's length are dropped with their datagram.
// ECN codepoints are combined as RFC 3168 §5.3 says: CE on any fragment
// marks the datagram CE, a mix of ECT and not-ECT drops it. A first
// fragment that cuts the upper-layer header is reassembled all the same:
// that is a policy question (see Tracker), not a reassembly one.
type Reassembler struct {
	cfg     ReassemblerConfig
	timeout int64
	maxSize [2]int // by version: 4, 6
	clk     clock
	idx     index
	ln      links
	live    list // in reassembly, oldest first
	dropped list // dropped, remembered until the timeout
	slots   []slot
	free    []int32

	pieces    []piece
	freePiece []int32

	blocks    [][]byte
	chunkNext []int32
	freeChunk []int32
	nChunks   int // chunks allocated
	maxChunks int

	ctr reassemblyCounters
}

type reassemblyCounters struct {
	in, reassembled, joined, atomic, duplicates atomic.Uint64
	dropped, droppedDatagrams                   [numReasons]atomic.Uint64
	datagrams, fragments, bytes                 atomic.Int64
}

// NewReassembler makes a reassembler; its tables are allocated now, the
// memory for fragments as it is needed.
func NewReassembler(cfg ReassemblerConfig) *Reassembler {
	cfg.normalize()
	maxChunks := cfg.MaxBytes / chunkSize
	npieces := min(maxChunks, cfg.MaxDatagrams*cfg.MaxFragments)
	r := &Reassembler{
		cfg:       cfg,
		timeout:   int64(cfg.Timeout),
		idx:       newIndex(cfg.MaxDatagrams),
		ln:        newLinks(cfg.MaxDatagrams),
		live:      newList(),
		dropped:   newList(),
		slots:     make([]slot, cfg.MaxDatagrams),
		free:      make([]int32, cfg.MaxDatagrams),
		pieces:    make([]piece, npieces),
		freePiece: make([]int32, npieces),
		blocks:    make([][]byte, 0, (maxChunks+blockChunks-1)/blockChunks),
		chunkNext: make([]int32, maxChunks),
		freeChunk: make([]int32, 0, maxChunks),
		maxChunks: maxChunks,
	}
	r.maxSize[0], r.maxSize[1] = maxIPv4Datagram, 40+maxIPv6Payload
	if cfg.MaxDatagramSize > 0 {
		r.maxSize[0] = min(r.maxSize[0], cfg.MaxDatagramSize)
		r.maxSize[1] = min(r.maxSize[1], cfg.MaxDatagramSize)
	}
	for i := range r.free {
		r.free[i] = int32(len(r.free) - 1 - i)
	}
	for i := range r.freePiece {
		r.freePiece[i] = int32(len(r.freePiece) - 1 - i)
	}
	return r
}

// Config is the configuration in effect, defaults filled in.
func (r *Reassembler) Config() ReassemblerConfig { return r.cfg }

func (r *Reassembler) limit(version uint8) int {
	if version == 6 {
		return r.maxSize[1]
	}
	return r.maxSize[0]
}

// Add takes one fragment, an IPv4 or IPv6 packet starting at the IP header
// (bytes past the length its header gives are ignored). It copies what it
// keeps: pkt is free again when Add returns. When the fragment completes
// its datagram, Add writes the whole packet into dst (grown only when its
// capacity is too small) and returns it with done true: an IPv4 header
// with the total length, flags, offset and checksum fixed, or an IPv6
// packet with its payload length fixed and the Fragment header taken out
// of the extension header chain. An IPv6 atomic fragment comes back at
// once the same way. dst must not overlap pkt; the packet returned lives
// in dst (or in a new slice when dst was too small).
//
// A nil error with done false means the fragment is kept (or was an exact
// duplicate). An error means it was dropped, and says why; with
// ErrOverlap, ErrTooBig, ErrTooManyFragments, ErrOverMemory, ErrECN and
// ErrBadFragment its datagram may have been dropped with it. A packet that
// is no fragment gets ErrNotFragment.
func (r *Reassembler) Add(pkt []byte, now time.Time, dst []byte) (out []byte, done bool, err error) {
	ts := r.clk.at(now)
	r.expire(ts)
	defer r.publish()
	in, err := Parse(pkt)
	// Tiny first fragments and fragments over the upper-layer header are
	// a policy matter; reassembly takes them.
	if err != nil && !(in.IsFragment && (err == ErrTinyFirst || err == ErrHeaderOverwrite)) {
		r.ctr.in.Add(1)
		r.ctr.dropped[ReasonOf(err)].Add(1)
		return nil, false, err
	}
	if !in.IsFragment {
		if in.Atomic {
			r.ctr.in.Add(1)
			r.ctr.atomic.Add(1)
			return stripAtomic(pkt[:in.Len], &in, dst), true, nil
		}
		return nil, false, ErrNotFragment
	}
	r.ctr.in.Add(1)
	pkt = pkt[:in.Len]
	lo, hi := uint32(in.Offset), uint32(in.End())
	s := r.idx.find(&in.Key)
	tooBig := in.HeaderLen+int(hi) > r.limit(in.Version)
	if s < 0 {
		if tooBig {
			r.ctr.dropped[ReasonTooBig].Add(1)
			r.ctr.droppedDatagrams[ReasonTooBig].Add(1)
			return nil, false, ErrTooBig
		}
		s = r.newSlot(&in.Key, ts)
	}
	sl := &r.slots[s]
	if sl.state == stateBad {
		r.ctr.dropped[sl.reason].Add(1)
		return nil, false, errOf(sl.reason)
	}
	if tooBig {
		return nil, false, r.fail(s, ReasonTooBig, 1, ts)
	}
	if in.More {
		if sl.hasLast && hi > sl.end {
			return nil, false, r.fail(s, ReasonBadFragment, 1, ts)
		}
	} else if (sl.hasLast && hi != sl.end) || hi < sl.maxEnd {
		return nil, false, r.fail(s, ReasonBadFragment, 1, ts)
	}
	// Find the fragment's place: after prev, before next.
	data := pkt[in.DataOff:]
	prev, next := int32(-1), sl.frags
	for next >= 0 && r.pieces[next].off < lo {
		prev, next = next, r.pieces[next].next
	}
	if next >= 0 && r.pieces[next].off == lo && r.pieces[next].end == hi && r.same(r.pieces[next].chunk, data) {
		r.ctr.duplicates.Add(1)
		return nil, false, nil
	}
	if (prev >= 0 && r.pieces[prev].end > lo) || (next >= 0 && r.pieces[next].off < hi) {
		return nil, false, r.fail(s, ReasonOverlap, 1, ts)
	}
	if int(sl.nfrags) >= r.cfg.MaxFragments {
		return nil, false, r.fail(s, ReasonTooManyFragments, 1, ts)
	}
	need := chunksFor(len(data))
	if in.First {
		need += chunksFor(in.HeaderLen)
	}
	if !r.reserve(need, s) || len(r.freePiece) == 0 {
		return nil, false, r.fail(s, ReasonOverMemory, 1, ts)
	}
	// Keep it.
	n := len(r.freePiece) - 1
	p := r.freePiece[n]
	r.freePiece = r.freePiece[:n]
	r.pieces[p] = piece{off: lo, end: hi, chunk: r.store(data), next: next}
	if prev >= 0 {
		r.pieces[prev].next = p
	} else {
		sl.frags = p
	}
	sl.chunks += int32(need)
	sl.nfrags++
	sl.covered += hi - lo
	sl.maxEnd = max(sl.maxEnd, hi)
	if !in.More {
		sl.hasLast, sl.end = true, hi
	}
	sl.ecn |= 1 << ecnOf(pkt)
	if in.First {
		sl.hasFirst = true
		sl.hdr = r.store(pkt[:in.HeaderLen])
		sl.hdrLen = int32(in.HeaderLen)
		if in.Version == 6 {
			sl.nhOff = int32(in.NextHdrOff)
			sl.fragNH = pkt[in.FragHdrOff]
		}
	}
	if !sl.hasFirst || !sl.hasLast || sl.covered != sl.end {
		return nil, false, nil
	}
	return r.assemble(s, in.Version, dst, ts)
}

// ecnOf reads the ECN codepoint of an IPv4 or IPv6 header.
func ecnOf(p []byte) uint8 {
	if p[0]>>4 == 4 {
		return p[1] & 3
	}
	return (p[1] >> 4) & 3
}

const (
	ecnNotECT = 0
	ecnCE     = 3
)

// assemble writes complete datagram s into dst and forgets it.
func (r *Reassembler) assemble(s int32, version uint8, dst []byte, ts int64) ([]byte, bool, error) {
	sl := &r.slots[s]
	hl := int(sl.hdrLen)
	n := hl + int(sl.end)
	if n > r.limit(version) || (version == 6 && n-40 > maxIPv6Payload) {
		return nil, false, r.fail(s, ReasonTooBig, 0, ts)
	}
	if sl.ecn&(1<<ecnNotECT) != 0 && sl.ecn != 1<<ecnNotECT {
		return nil, false, r.fail(s, ReasonECN, 0, ts)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	r.load(sl.hdr, dst[:hl])
	for p := sl.frags; p >= 0; p = r.pieces[p].next {
		pc := &r.pieces[p]
		r.load(pc.chunk, dst[hl+int(pc.off):hl+int(pc.end)])
	}
	ce := sl.ecn&(1<<ecnCE) != 0
	if version == 4 {
		binary.BigEndian.PutUint16(dst[2:], uint16(n))
		binary.BigEndian.PutUint16(dst[6:], binary.BigEndian.Uint16(dst[6:])&0x4000) // keep DF
		if ce {
			dst[1] |= ecnCE
		}
		binary.BigEndian.PutUint16(dst[10:], 0)
		binary.BigEndian.PutUint16(dst[10:], checksum(dst[:hl]))
	} else {
		binary.BigEndian.PutUint16(dst[4:], uint16(n-40))
		dst[sl.nhOff] = sl.fragNH
		if ce {
			dst[1] |= ecnCE << 4
		}
	}
	r.ctr.reassembled.Add(1)
	r.ctr.joined.Add(uint64(sl.nfrags))
	r.forget(s)
	return dst, true, nil
}

// stripAtomic copies an IPv6 atomic fragment into dst without its
// Fragment header.
func stripAtomic(p []byte, in *Info, dst []byte) []byte {
	n := len(p) - 8
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	copy(dst, p[:in.FragHdrOff])
	copy(dst[in.FragHdrOff:], p[in.FragHdrOff+8:])
	binary.BigEndian.PutUint16(dst[4:], uint16(n-40))
	dst[in.NextHdrOff] = p[in.FragHdrOff]
	return dst
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// fail drops datagram s for reason: the fragments it held and extra more
// (the one at hand, when it was not kept) are counted, its memory is
// freed, and it is remembered as dropped until the timeout so that its
// late fragments are dropped too. Evictions and timeouts forget the
// datagram instead (see evict).
func (r *Reassembler) fail(s int32, reason Reason, extra int, ts int64) error {
	sl := &r.slots[s]
	r.ctr.dropped[reason].Add(uint64(sl.nfrags) + uint64(extra))
	r.ctr.droppedDatagrams[reason].Add(1)
	r.freeData(s)
	r.live.remove(&r.ln, s)
	*sl = slot{when: ts, state: stateBad, reason: reason, frags: -1, hdr: -1}
	r.dropped.pushBack(&r.ln, s)
	return errOf(reason)
}

// evict drops datagram s and forgets it.
func (r *Reassembler) evict(s int32, reason Reason) {
	sl := &r.slots[s]
	if sl.state == statePending {
		r.ctr.dropped[reason].Add(uint64(sl.nfrags))
		r.ctr.droppedDatagrams[reason].Add(1)
	}
	r.forget(s)
}

// forget frees slot s and everything it holds.
func (r *Reassembler) forget(s int32) {
	sl := &r.slots[s]
	r.freeData(s)
	if sl.state == statePending {
		r.live.remove(&r.ln, s)
	} else {
		r.dropped.remove(&r.ln, s)
	}
	r.idx.remove(s)
	*sl = slot{}
	r.free = append(r.free, s)
}

func (r *Reassembler) freeData(s int32) {
	sl := &r.slots[s]
	for p := sl.frags; p >= 0; {
		r.freeChunks(r.pieces[p].chunk)
		next := r.pieces[p].next
		r.freePiece = append(r.freePiece, p)
		p = next
	}
	if sl.hasFirst {
		r.freeChunks(sl.hdr)
	}
	sl.frags, sl.hasFirst, sl.nfrags, sl.chunks = -1, false, 0, 0
}

// newSlot starts a datagram, dropping the oldest one (in reassembly or
// remembered as dropped) when the table is full.
func (r *Reassembler) newSlot(k *Key, ts int64) int32 {
	if len(r.free) == 0 {
		v, d := r.live.head, r.dropped.head
		if v < 0 || (d >= 0 && r.slots[d].when <= r.slots[v].when) {
			v = d
		}
		r.evict(v, ReasonEvicted)
	}
	n := len(r.free) - 1
	s := r.free[n]
	r.free = r.free[:n]
	r.slots[s] = slot{when: ts, state: statePending, frags: -1, hdr: -1}
	r.idx.insert(k, s)
	r.live.pushBack(&r.ln, s)
	return s
}

// Expire drops the datagrams not completed within the timeout, and
// forgets dropped ones remembered as long. Add does it too.
func (r *Reassembler) Expire(now time.Time) {
	r.expire(r.clk.at(now))
	r.publish()
}

func (r *Reassembler) expire(ts int64) {
	for s := r.live.head; s >= 0 && ts-r.slots[s].when >= r.timeout; s = r.live.head {
		r.evict(s, ReasonTimeout)
	}
	for s := r.dropped.head; s >= 0 && ts-r.slots[s].when >= r.timeout; s = r.dropped.head {
		r.forget(s)
	}
}

// Flush drops every datagram in reassembly (counted as evicted) and
// forgets the dropped ones.
func (r *Reassembler) Flush() {
	for s := r.live.head; s >= 0; s = r.live.head {
		r.evict(s, ReasonEvicted)
	}
	for s := r.dropped.head; s >= 0; s = r.dropped.head {
		r.forget(s)
	}
	r.publish()
}

func chunksFor(n int) int { return (n + chunkSize - 1) / chunkSize }

// reserve makes sure need chunks are free, allocating up to the cap and
// then dropping the datagrams that have waited longest, other than keep.
func (r *Reassembler) reserve(need int, keep int32) bool {
	for len(r.freeChunk) < need {
		if r.nChunks < r.maxChunks {
			k := min(blockChunks, r.maxChunks-r.nChunks)
			r.blocks = append(r.blocks, make([]byte, k*chunkSize))
			for i := range k {
				r.freeChunk = append(r.freeChunk, int32(r.nChunks+k-1-i))
			}
			r.nChunks += k
			continue
		}
		v := r.live.head
		if v == keep {
			v = r.ln.next[v]
		}
		if v < 0 {
			return false
		}
		r.evict(v, ReasonOverMemory)
	}
	return true
}

func (r *Reassembler) chunk(c int32) []byte {
	b := r.blocks[int(c)/blockChunks]
	o := int(c) % blockChunks * chunkSize
	return b[o : o+chunkSize : o+chunkSize]
}

// store copies b into a chain of free chunks (reserved beforehand) and
// returns its first chunk.
func (r *Reassembler) store(b []byte) int32 {
	head, tail := int32(-1), int32(-1)
	for len(b) > 0 {
		n := len(r.freeChunk) - 1
		c := r.freeChunk[n]
		r.freeChunk = r.freeChunk[:n]
		b = b[copy(r.chunk(c), b):]
		r.chunkNext[c] = -1
		if tail >= 0 {
			r.chunkNext[tail] = c
		} else {
			head = c
		}
		tail = c
	}
	return head
}

// load copies len(dst) bytes from the chain at c.
func (r *Reassembler) load(c int32, dst []byte) {
	for len(dst) > 0 && c >= 0 {
		dst = dst[copy(dst, r.chunk(c)):]
		c = r.chunkNext[c]
	}
}

// same reports whether the chain at c starts with exactly b.
func (r *Reassembler) same(c int32, b []byte) bool {
	for len(b) > 0 && c >= 0 {
		ch := r.chunk(c)
		n := min(len(b), len(ch))
		if string(ch[:n]) != string(b[:n]) {
			return false
		}
		b = b[n:]
		c = r.chunkNext[c]
	}
	return len(b) == 0
}

func (r *Reassembler) freeChunks(c int32) {
	for c >= 0 {
		r.freeChunk = append(r.freeChunk, c)
		c = r.chunkNext[c]
	}
}

func (r *Reassembler) publish() {
	used := r.nChunks - len(r.freeChunk)
	r.ctr.datagrams.Store(int64(len(r.slots) - len(r.free)))
	r.ctr.fragments.Store(int64(len(r.pieces) - len(r.freePiece)))
	r.ctr.bytes.Store(int64(used * chunkSize))
}

// ReassemblyStats are a reassembler's counts. Fragment counts add up: In =
// Joined + Atomic + Duplicates + the sum of Dropped + Fragments.
type ReassemblyStats struct {
	// Gauges: datagrams in reassembly or remembered as dropped,
	// fragments held, and the memory holding them (at most MaxBytes).
	Datagrams int `json:"datagrams"`
	Fragments int `json:"fragments"`
	Bytes     int `json:"bytes"`
	// In counts the packets given to Add, except those that were no
	// fragment.
	In uint64 `json:"in"`
	// Reassembled counts datagrams completed, Joined the fragments that
	// went into them.
	Reassembled uint64 `json:"reassembled"`
	Joined      uint64 `json:"joined"`
	// Atomic counts IPv6 atomic fragments passed through.
	Atomic uint64 `json:"atomic"`
	// Duplicates counts exact duplicates ignored.
	Duplicates uint64 `json:"duplicates"`
	// Dropped counts fragments dropped, those a dropped datagram held
	// included, by reason; DroppedDatagrams counts datagrams dropped
	// whole, by reason (timed_out, overlap, too_big, over_memory,
	// evicted, too_many_fragments, bad_fragment, ecn).
	Dropped          map[string]uint64 `json:"dropped"`
	DroppedDatagrams map[string]uint64 `json:"dropped_datagrams"`
}

// Add adds o's gauges and counts to s, to sum several reassemblers.
func (s *ReassemblyStats) Add(o ReassemblyStats) {
	s.Datagrams += o.Datagrams
	s.Fragments += o.Fragments
	s.Bytes += o.Bytes
	s.In += o.In
	s.Reassembled += o.Reassembled
	s.Joined += o.Joined
	s.Atomic += o.Atomic
	s.Duplicates += o.Duplicates
	addCounts(&s.Dropped, o.Dropped)
	addCounts(&s.DroppedDatagrams, o.DroppedDatagrams)
}

// Stats reads the counters; it may be called from any goroutine.
func (r *Reassembler) Stats() ReassemblyStats {
	c := &r.ctr
	s := ReassemblyStats{
		Datagrams:        int(c.datagrams.Load()),
		Fragments:        int(c.fragments.Load()),
		Bytes:            int(c.bytes.Load()),
		In:               c.in.Load(),
		Reassembled:      c.reassembled.Load(),
		Joined:           c.joined.Load(),
		Atomic:           c.atomic.Load(),
		Duplicates:       c.duplicates.Load(),
		Dropped:          reasonCounts(&c.dropped),
		DroppedDatagrams: reasonCounts(&c.droppedDatagrams),
	}
	return s
}
