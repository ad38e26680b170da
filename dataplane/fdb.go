package dataplane

import (
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultFDBAging is how long a MAC stays learned without being seen.
const DefaultFDBAging = 300 * time.Second

// DefaultFDBMaxEntries caps a network's forwarding database so that a guest
// spraying random source MACs cannot grow the daemon without bound.
const DefaultFDBMaxEntries = 64 << 10

// refreshInterval is how stale an entry's last-seen time may get before the
// loop rewrites it. Rewriting on every frame would take the write lock on
// every batch; once a second keeps aging exact to well under a second in
// 300.
const refreshInterval = int64(time.Second)

// FDB is one network's forwarding database: which port each MAC was last
// seen on. The switching loops read it under a read lock held for a whole
// batch and apply what they learned under the write lock once per batch, so
// a frame costs a map lookup and no lock of its own.
type FDB struct {
	mu      sync.RWMutex
	entries map[uint64]fdbEntry
	max     int
	aging   int64

	learned, moved, aged, full atomic.Uint64
}

type fdbEntry struct {
	port uint32
	seen int64 // monotonic nanoseconds, see clock
	// vtep is the remote VTEP a MAC learned on the uplink is behind (the
	// outer source address, IPv4 as v4-mapped); zero for local ports.
	vtep [16]byte
}

// NewFDB makes an empty database; max <= 0 and aging <= 0 take defaults.
func NewFDB(max int, aging time.Duration) *FDB {
	if max <= 0 {
		max = DefaultFDBMaxEntries
	}
	if aging <= 0 {
		aging = DefaultFDBAging
	}
	return &FDB{entries: make(map[uint64]fdbEntry), max: max, aging: int64(aging)}
}

// epoch anchors clock so that it can return a plain integer that still
// follows the monotonic clock.
var epoch = time.Now()

// clock is the time the loops stamp entries with, read once per batch.
func clock() int64 { return int64(time.Since(epoch)) }

// learning collects the source MACs a batch must (re)learn, so the write
// lock is taken once per batch and only when something changed.
type learning struct {
	n    int
	macs [batchSize]uint64
	port [batchSize]uint32
	vtep [batchSize][16]byte
}

func (l *learning) add(mac uint64, port uint32, vtep *[16]byte) {
	if l.n < len(l.macs) {
		l.macs[l.n], l.port[l.n], l.vtep[l.n] = mac, port, *vtep
		l.n++
	}
}

// lookup finds a MAC's port. The caller holds the read lock.
func (f *FDB) lookup(mac uint64) (fdbEntry, bool) {
	e, ok := f.entries[mac]
	return e, ok
}

// noteSource records that mac was seen on port (behind vtep, for the
// uplink), queueing it for learning when it is new, has moved, or its
// last-seen time needs a refresh. The caller holds the read lock.
func (f *FDB) noteSource(mac uint64, port uint32, vtep *[16]byte, now int64, l *learning) {
	e, ok := f.entries[mac]
	if !ok || e.port != port || e.vtep != *vtep || now-e.seen > refreshInterval {
		l.add(mac, port, vtep)
	}
}

// apply learns what a batch collected; it takes the write lock itself.
func (f *FDB) apply(l *learning, now int64) {
	if l.n == 0 {
		return
	}
	f.mu.Lock()
	for i := 0; i < l.n; i++ {
		mac, port, vtep := l.macs[i], l.port[i], l.vtep[i]
		e, ok := f.entries[mac]
		switch {
		case !ok && len(f.entries) >= f.max:
			f.full.Add(1) // stays unknown and is flooded
			continue
		case !ok:
			f.learned.Add(1)
		case e.port != port || e.vtep != vtep:
			f.moved.Add(1)
		}
		f.entries[mac] = fdbEntry{port: port, seen: now, vtep: vtep}
	}
	f.mu.Unlock()
	l.n = 0
}

// expire forgets entries not seen within the aging time.
func (f *FDB) expire(now int64) {
	f.mu.Lock()
	for mac, e := range f.entries {
		if now-e.seen > f.aging {
			delete(f.entries, mac)
			f.aged.Add(1)
		}
	}
	f.mu.Unlock()
}

// flushPort forgets every MAC learned on a port, when the port goes away.
func (f *FDB) flushPort(port uint32) {
	f.mu.Lock()
	for mac, e := range f.entries {
		if e.port == port {
			delete(f.entries, mac)
		}
	}
	f.mu.Unlock()
}

// Len is the number of learned MACs.
func (f *FDB) Len() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.entries)
}

// FDBStats counts the database's changes since it was made.
type FDBStats struct {
	Entries int    `json:"entries"`
	Learned uint64 `json:"learned"`
	Moved   uint64 `json:"moved"`
	Aged    uint64 `json:"aged"`
	Full    uint64 `json:"full"` // MACs not learned because the database was full
}

// Stats reads the counters.
func (f *FDB) Stats() FDBStats {
	return FDBStats{
		Entries: f.Len(),
		Learned: f.learned.Load(),
		Moved:   f.moved.Load(),
		Aged:    f.aged.Load(),
		Full:    f.full.Load(),
	}
}

// fdbRecord is one entry as the control plane sees it.
type fdbRecord struct {
	MAC  net.HardwareAddr
	Port uint32
	Age  time.Duration
	VTEP netip.Addr // invalid for local ports
}

// snapshot lists the entries sorted by MAC.
func (f *FDB) snapshot() []fdbRecord {
	now := clock()
	f.mu.RLock()
	out := make([]fdbRecord, 0, len(f.entries))
	for mac, e := range f.entries {
		r := fdbRecord{MAC: keyMAC(mac), Port: e.port, Age: time.Duration(now - e.seen)}
		if e.vtep != ([16]byte{}) {
			r.VTEP = netip.AddrFrom16(e.vtep).Unmap()
		}
		out = append(out, r)
	}
	f.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return string(out[i].MAC) < string(out[j].MAC) })
	return out
}

func keyMAC(k uint64) net.HardwareAddr {
	return net.HardwareAddr{byte(k >> 40), byte(k >> 32), byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
}
