package policy

import (
	"sync/atomic"
)

// RuleStats counts what one rule (or the default) decided.
type RuleStats struct {
	// Matches is how many lookups the rule won.
	Matches uint64 `json:"matches"`
	// Packets and Bytes count the frames its verdict applied to: the
	// matches, and the later fragments of a datagram that take the first
	// fragment's verdict without a lookup.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Counter is one switching loop's counters for one classifier. The loop
// counts into plain memory and publishes once per batch with Flush, so a
// frame costs no atomic operation and no two loops share a cache line;
// Stats adds up every loop's published counts.
//
// A Counter belongs to one goroutine. A nil Counter counts nothing.
type Counter struct {
	local  []localCount // running totals, slot 0 is the default
	dirty  []int32      // slots changed since the last Flush
	shared []sharedCount
}

type localCount struct {
	RuleStats
	dirty bool
}

type sharedCount struct{ matches, packets, bytes atomic.Uint64 }

// NewCounter makes and registers a loop's counter for c. Call it once
// per loop and classifier, not per frame.
func (c *Classifier) NewCounter() *Counter {
	if c == nil {
		return nil
	}
	n := c.rules + 1
	k := &Counter{
		local:  make([]localCount, n),
		dirty:  make([]int32, 0, n),
		shared: make([]sharedCount, n),
	}
	c.mu.Lock()
	c.counters = append(c.counters, k)
	c.mu.Unlock()
	return k
}

// Count records a lookup that rule (-1: the default) won for a frame of
// the given length.
func (k *Counter) Count(rule, bytes int) { k.add(rule, bytes, 1) }

// CountFollowing records a frame that took an earlier lookup's verdict,
// such as a later fragment of a datagram.
func (k *Counter) CountFollowing(rule, bytes int) { k.add(rule, bytes, 0) }

func (k *Counter) add(rule, bytes int, match uint64) {
	if k == nil {
		return
	}
	i := rule + 1
	if uint(i) >= uint(len(k.local)) {
		return // a rule of another classifier: not ours to count
	}
	l := &k.local[i]
	l.Matches += match
	l.Packets++
	if bytes > 0 {
		l.Bytes += uint64(bytes)
	}
	if !l.dirty {
		l.dirty = true
		k.dirty = append(k.dirty, int32(i))
	}
}

// Flush publishes what was counted since the last Flush; once per batch.
func (k *Counter) Flush() {
	if k == nil {
		return
	}
	for _, i := range k.dirty {
		l := &k.local[i]
		s := &k.shared[i]
		s.matches.Store(l.Matches)
		s.packets.Store(l.Packets)
		s.bytes.Store(l.Bytes)
		l.dirty = false
	}
	k.dirty = k.dirty[:0]
}

// Stats adds up the published counts of every loop: one entry per rule,
// in order, and the default's.
func (c *Classifier) Stats() (rules []RuleStats, deflt RuleStats) {
	if c == nil {
		return nil, RuleStats{}
	}
	sum := make([]RuleStats, c.rules+1)
	c.mu.Lock()
	ks := append([]*Counter(nil), c.counters...)
	c.mu.Unlock()
	for _, k := range ks {
		for i := range sum {
			s := &k.shared[i]
			sum[i].Matches += s.matches.Load()
			sum[i].Packets += s.packets.Load()
			sum[i].Bytes += s.bytes.Load()
		}
	}
	return sum[1:], sum[0]
}

// Table holds the classifier in force for one network or port. Readers
// load it without a lock; a new ruleset is compiled aside and swapped in
// whole, so a frame is judged entirely by the old rules or entirely by the
// new ones.
type Table struct {
	cur atomic.Pointer[Classifier]
}

// NewTable starts a table with c; nil allows everything.
func NewTable(c *Classifier) *Table {
	t := &Table{}
	t.cur.Store(c)
	return t
}

// Load is the classifier in force.
func (t *Table) Load() *Classifier { return t.cur.Load() }

// Swap puts c in force and returns the one it replaces.
func (t *Table) Swap(c *Classifier) *Classifier { return t.cur.Swap(c) }

// Replace compiles rs and puts it in force; on error the old rules stay.
func (t *Table) Replace(rs Ruleset) error {
	c, err := Compile(rs)
	if err != nil {
		return err
	}
	t.cur.Store(c)
	return nil
}

// Matcher is one switching loop's handle on a Table: the classifier it
// uses for the current batch and the loop's counter for it.
//
//	m.Begin()            // once per batch: notice a swapped classifier
//	act, rule := m.Match(&p)
//	m.Flush()            // once per batch: publish the counts
type Matcher struct {
	t *Table
	c *Classifier
	k *Counter
}

// Matcher makes a loop's handle; one per loop.
func (t *Table) Matcher() *Matcher {
	m := &Matcher{t: t}
	m.Begin()
	return m
}

// Begin picks up the classifier in force, publishing the counts of the one
// it leaves.
func (m *Matcher) Begin() {
	c := m.t.Load()
	if c == m.c {
		return
	}
	m.k.Flush()
	m.c, m.k = c, c.NewCounter()
}

// Classifier is the classifier of the current batch.
func (m *Matcher) Classifier() *Classifier { return m.c }

// Match classifies p with the batch's classifier and counts the result.
func (m *Matcher) Match(p *Packet) (Action, int) {
	a, r := m.c.Match(p)
	m.k.Count(r, p.Len)
	return a, r
}

// CountFollowing counts a frame that took the verdict of an earlier
// lookup of the same classifier (a later fragment).
func (m *Matcher) CountFollowing(rule, bytes int) { m.k.CountFollowing(rule, bytes) }

// Flush publishes the batch's counts.
func (m *Matcher) Flush() { m.k.Flush() }
