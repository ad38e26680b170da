package frag

import (
	"sync/atomic"
	"time"
)

// Action is what the caller does with a fragment, or with a held frame the
// tracker gives back.
type Action uint8

const (
	// Pass: not a fragment; the tracker has no say, apply your policy.
	Pass Action = iota
	// Allow: forward it; the datagram's first fragment was allowed.
	Allow
	// Deny: drop it; the datagram's first fragment was denied by policy.
	Deny
	// Hold: the tracker keeps the frame until the first fragment's
	// verdict is known; the caller must not touch it meanwhile.
	Hold
	// Drop: drop it, for a fragment rule (Outcome.Reason says which).
	Drop
)

var actionNames = [...]string{"pass", "allow", "deny", "hold", "drop"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "unknown"
}

// Outcome is the tracker's answer for one fragment.
type Outcome struct {
	Action Action
	Reason Reason // why, when Action is Drop
	// Tag is what the caller recorded with the datagram's verdict
	// (Info.Tag at First), when Action is Allow or Deny.
	Tag uint64
}

// Held is a frame the tracker holds for the caller. The tracker never
// reads the frame: Handle and Aux are the caller's (a UMEM address, an
// ingress port and network), Len is what the frame counts against the byte
// caps. When the tracker gives a frame back it sets Action to Allow
// (forward it as if it had just been allowed) or to Deny or Drop (free it;
// Reason says why for Drop).
type Held struct {
	Handle uint64
	Aux    uint32
	Len    uint32
	Action Action
	Reason Reason
	// Tag is the datagram's Info.Tag at First, when Action is Allow or
	// Deny.
	Tag uint64
}

// TrackerConfig bounds a Tracker. Zero fields take the defaults.
type TrackerConfig struct {
	// MaxDatagrams is how many datagrams are tracked at once, waiting
	// for their first fragment or remembering its verdict (default 4096).
	// When full, the oldest record is evicted.
	MaxDatagrams int
	// MaxHeldFrames and MaxHeldBytes cap the frames held over all
	// datagrams (defaults 256 and 512 KiB). Size MaxHeldFrames to what
	// the loop's UMEM can spare. When full, the datagrams that have waited
	// longest are dropped to make room.
	MaxHeldFrames int
	MaxHeldBytes  int
	// MaxHeldPerDatagram and MaxHeldBytesPerDatagram cap what one
	// datagram may hold (defaults 64 frames and 96 KiB, at most the
	// global caps); a datagram that needs more is dropped whole.
	MaxHeldPerDatagram      int
	MaxHeldBytesPerDatagram int
	// Timeout is how long a datagram may wait for its first fragment,
	// and how long a verdict is remembered after it was taken (default
	// 30 s, Linux's reassembly timeout for IPv4; IPv6's is 60 s, RFC 8200
	// §4.5, but fragments that far apart are not worth holding frames
	// for).
	Timeout time.Duration
}

// Tracker defaults.
const (
	DefaultTrackerDatagrams         = 4096
	DefaultMaxHeldFrames            = 256
	DefaultMaxHeldBytes             = 512 << 10
	DefaultMaxHeldPerDatagram       = 64
	DefaultMaxHeldBytesPerDatagram  = 96 << 10
	DefaultTimeout                  = 30 * time.Second
	maxRanges                       = 16
	stateFree, statePending         = 0, 1
	stateAllow, stateDeny, stateBad = 2, 3, 4
)

func (c *TrackerConfig) normalize() {
	if c.MaxDatagrams <= 0 {
		c.MaxDatagrams = DefaultTrackerDatagrams
	}
	if c.MaxDatagrams > 1<<24 {
		c.MaxDatagrams = 1 << 24
	}
	if c.MaxHeldFrames <= 0 {
		c.MaxHeldFrames = DefaultMaxHeldFrames
	}
	if c.MaxHeldFrames > 1<<24 {
		c.MaxHeldFrames = 1 << 24
	}
	if c.MaxHeldBytes <= 0 {
		c.MaxHeldBytes = DefaultMaxHeldBytes
	}
	if c.MaxHeldPerDatagram <= 0 {
		c.MaxHeldPerDatagram = DefaultMaxHeldPerDatagram
	}
	c.MaxHeldPerDatagram = min(c.MaxHeldPerDatagram, c.MaxHeldFrames)
	if c.MaxHeldBytesPerDatagram <= 0 {
		c.MaxHeldBytesPerDatagram = DefaultMaxHeldBytesPerDatagram
	}
	c.MaxHeldBytesPerDatagram = min(c.MaxHeldBytesPerDatagram, c.MaxHeldBytes)
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
}

// span is a run of the datagram's bytes already seen, [lo, hi).
type span struct{ lo, hi uint32 }

// record is one datagram the tracker knows of.
type record struct {
	when     int64 // arrival of its first frame (pending), or of its verdict
	state    uint8
	reason   Reason // why it was dropped (stateBad)
	hasLast  bool
	nr       uint8
	end      uint32 // length of the fragmentable part, once the last fragment is seen
	maxEnd   uint32
	tag      uint64 // the caller's, recorded with the verdict
	held     int32  // first held frame, -1 for none
	heldTail int32
	heldN    int32
	heldLen  int64
	r        [maxRanges]span // seen bytes, sorted, disjoint, not touching
}

// add records the bytes [lo, hi) as seen, after checking them against what
// was seen: any byte seen twice is an overlap (the tracker keeps no bytes,
// so it cannot tell an exact duplicate from a rewrite), a length that
// contradicts the last fragment is a bad fragment. On failure nothing
// changes.
func (e *record) add(lo, hi uint32, more bool) Reason {
	if more {
		if e.hasLast && hi > e.end {
			return ReasonBadFragment
		}
	} else if (e.hasLast && hi != e.end) || hi < e.maxEnd {
		return ReasonBadFragment
	}
	n := int(e.nr)
	i := 0
	for i < n && e.r[i].hi < lo {
		i++
	}
	for j := i; j < n && e.r[j].lo < hi; j++ {
		if e.r[j].hi > lo {
			return ReasonOverlap
		}
	}
	switch {
	case i < n && e.r[i].hi == lo:
		e.r[i].hi = hi
		if i+1 < n && e.r[i+1].lo == hi {
			e.r[i].hi = e.r[i+1].hi
			copy(e.r[i+1:n], e.r[i+2:n])
			e.nr--
		}
	case i < n && e.r[i].lo == hi:
		e.r[i].lo = lo
	default:
		if n == maxRanges {
			return ReasonTooManyFragments
		}
		copy(e.r[i+1:n+1], e.r[i:n])
		e.r[i] = span{lo, hi}
		e.nr++
	}
	if !more {
		e.hasLast, e.end = true, hi
	}
	e.maxEnd = max(e.maxEnd, hi)
	return ReasonNone
}

// complete reports that every byte of the datagram has been seen.
func (e *record) complete() bool {
	return e.hasLast && e.nr == 1 && e.r[0].lo == 0 && e.r[0].hi == e.end
}

type heldRec struct {
	h    Held
	next int32
}

// Tracker makes every fragment of a datagram share the verdict the
// caller's policy took on its first fragment (RFC 8900 §6.3). It is owned
// by one goroutine (the switching loop); only Stats may be called from
// others. It allocates nothing after NewTracker as long as the out slices
// the caller passes have room (see First).
//
// Per IP packet the caller does:
//
//	info, err := frag.Parse(ip)
//	switch {
//	case err != nil:
//		o, out = t.Reject(&info, err, now, out) // always Drop
//	case !info.IsFragment:
//		// not the tracker's: apply policy as usual
//	case info.First:
//		v := policy(info.Proto, info.L4) // frag.Allow or frag.Deny
//		o, out = t.First(&info, v, now, out)
//	default:
//		o, out = t.Later(&info, frag.Held{Handle: addr, Aux: port, Len: n}, now, out)
//	}
//	// o.Action: Allow → forward; Deny or Drop → free the frame;
//	// Hold → the tracker owns the frame now.
//	// Every Held in out is a frame given back: forward or free it per
//	// its Action. Then out = out[:0] for the next call.
//
// Ownership: a frame passed to Later belongs to the tracker exactly when
// Later returns Hold, and until a later call (First, Later, Reject,
// Expire, Flush) appends it to out; from then on it is the caller's again.
// Every held frame comes back exactly once. HeldFrames and AppendHeld tell
// which frames the tracker has at any time, for the loop's frame
// accounting. Frames given back with Allow are forwarded as if they had
// just arrived (the caller looks up their destination then); the others
// are freed.
//
// Rules: the tracker keeps no bytes, only which byte ranges of each
// datagram it has seen, so any byte seen twice is an overlap (RFC 5722):
// an exact duplicate too, a second first fragment above all (it could
// carry another upper-layer header). The datagram is then dropped: its
// held frames, the fragment at hand and its fragments still to come,
// until the timeout. So are datagrams whose first fragment Parse refused
// (Reject), whose fragments contradict the datagram's length, or that
// would hold more than the per-datagram caps. A record is forgotten as
// soon as every byte of its datagram has been seen, or after the
// timeout; the oldest records and held frames are dropped first when the
// caps are reached.
type Tracker struct {
	cfg      TrackerConfig
	timeout  int64
	clk      clock
	idx      index
	ln       links
	pending  list // waiting for their first fragment, oldest first
	decided  list // verdict known (or dropped), oldest verdict first
	freeRecs []int32
	recs     []record
	held     []heldRec
	freeHeld []int32
	heldLen  int64

	ctr trackerCounters
}

type trackerCounters struct {
	in, firsts, allowed, denied, held, released atomic.Uint64
	completed, expired                          atomic.Uint64
	dropped, droppedDatagrams                   [numReasons]atomic.Uint64
	datagrams, pending, heldFrames, heldBytes   atomic.Int64
}

// NewTracker makes a tracker with all its tables allocated.
func NewTracker(cfg TrackerConfig) *Tracker {
	cfg.normalize()
	t := &Tracker{
		cfg:      cfg,
		timeout:  int64(cfg.Timeout),
		idx:      newIndex(cfg.MaxDatagrams),
		ln:       newLinks(cfg.MaxDatagrams),
		pending:  newList(),
		decided:  newList(),
		freeRecs: make([]int32, cfg.MaxDatagrams),
		recs:     make([]record, cfg.MaxDatagrams),
		held:     make([]heldRec, cfg.MaxHeldFrames),
		freeHeld: make([]int32, cfg.MaxHeldFrames),
	}
	for i := range t.freeRecs {
		t.freeRecs[i] = int32(len(t.freeRecs) - 1 - i)
	}
	for i := range t.freeHeld {
		t.freeHeld[i] = int32(len(t.freeHeld) - 1 - i)
	}
	return t
}

// Config is the configuration in effect, defaults filled in.
func (t *Tracker) Config() TrackerConfig { return t.cfg }

// fragSpan checks a fragment's place: the tracker does not trust the
// caller's Info blindly.
func fragSpan(in *Info) (lo, hi uint32, ok bool) {
	if in.Offset < 0 || in.DataLen <= 0 || in.Offset+in.DataLen > 1<<17 {
		return 0, 0, false
	}
	return uint32(in.Offset), uint32(in.Offset + in.DataLen), true
}

// First records the verdict v (Allow or Deny; anything else counts as
// Deny) the caller's policy took on a datagram's first fragment, and
// returns what to do with that fragment: v, or Drop when the fragment
// breaks a rule (it overlaps fragments already seen, a duplicate first
// fragment included, or the datagram was already dropped). Frames held for
// the datagram are appended to out with the same action (Allow, Deny, or
// Drop), in the order they arrived; frames of other datagrams the tracker
// had to give up may be appended too, with Drop. out grows by append: to
// allocate nothing, pass a slice with capacity for MaxHeldFrames (a
// call gives back at most every held frame).
func (t *Tracker) First(in *Info, v Action, now time.Time, out []Held) (Outcome, []Held) {
	if !in.IsFragment {
		return Outcome{Action: Pass}, out
	}
	t.ctr.in.Add(1)
	lo, hi, ok := fragSpan(in)
	if !ok || !in.First || lo != 0 {
		return t.dropOne(ReasonMalformed), out
	}
	if v != Allow {
		v = Deny
	}
	ts := t.clk.at(now)
	out = t.expire(ts, out)
	defer t.publish()
	i := t.idx.find(&in.Key)
	if i < 0 {
		i, out = t.alloc(&in.Key, ts, out)
		e := &t.recs[i]
		e.state = verdictState(v)
		e.tag = in.Tag
		e.add(lo, hi, in.More)
		t.decided.pushBack(&t.ln, i)
		t.ctr.firsts.Add(1)
		return t.verdict(v, in.Tag), out
	}
	e := &t.recs[i]
	if e.state == stateBad {
		return t.dropOne(e.reason), out
	}
	if r := e.add(lo, hi, in.More); r != ReasonNone {
		out = t.spoil(i, r, ts, out)
		return t.dropOne(r), out
	}
	t.ctr.firsts.Add(1)
	if e.state == statePending {
		e.state = verdictState(v)
		e.tag = in.Tag
		t.pending.remove(&t.ln, i)
		e.when = ts
		t.decided.pushBack(&t.ln, i)
		out = t.giveBack(i, v, ReasonNone, out)
	}
	// A decided record always holds offset 0, so add failed above; only a
	// pending one gets here.
	if e.complete() {
		t.release(i)
		t.ctr.completed.Add(1)
	}
	return t.verdict(v, in.Tag), out
}

// Later handles a fragment other than the first: it returns the verdict
// recorded for its datagram (Allow or Deny), Hold when the first fragment
// has not been seen yet (the tracker now owns h), or Drop with a reason
// (overlap, a bad length, the datagram already dropped, a hold cap). out
// receives frames given back, as for First: when this fragment breaks a
// rule, the frames its datagram held; when holding it needs room, frames of
// the datagrams that waited longest.
func (t *Tracker) Later(in *Info, h Held, now time.Time, out []Held) (Outcome, []Held) {
	if !in.IsFragment {
		return Outcome{Action: Pass}, out
	}
	t.ctr.in.Add(1)
	lo, hi, ok := fragSpan(in)
	if !ok || in.First || lo == 0 {
		return t.dropOne(ReasonMalformed), out
	}
	ts := t.clk.at(now)
	out = t.expire(ts, out)
	defer t.publish()
	i := t.idx.find(&in.Key)
	if i < 0 {
		return t.holdNew(in, lo, hi, h, ts, out)
	}
	e := &t.recs[i]
	switch e.state {
	case stateBad:
		return t.dropOne(e.reason), out
	case stateAllow, stateDeny:
		if r := e.add(lo, hi, in.More); r != ReasonNone {
			out = t.spoil(i, r, ts, out)
			return t.dropOne(r), out
		}
		v := Allow
		if e.state == stateDeny {
			v = Deny
		}
		tag := e.tag
		if e.complete() {
			t.release(i)
			t.ctr.completed.Add(1)
		}
		return t.verdict(v, tag), out
	}
	// Pending: hold this one too, within the per-datagram caps.
	if int(e.heldN) >= t.cfg.MaxHeldPerDatagram || e.heldLen+int64(h.Len) > int64(t.cfg.MaxHeldBytesPerDatagram) {
		out = t.spoil(i, ReasonHoldLimit, ts, out)
		return t.dropOne(ReasonHoldLimit), out
	}
	if r := e.add(lo, hi, in.More); r != ReasonNone {
		out = t.spoil(i, r, ts, out)
		return t.dropOne(r), out
	}
	if out, ok = t.makeRoom(int64(h.Len), i, out); !ok {
		out = t.spoil(i, ReasonOverMemory, ts, out)
		return t.dropOne(ReasonOverMemory), out
	}
	t.hold(i, h)
	return Outcome{Action: Hold}, out
}

// holdNew starts a pending record for a later fragment that came first.
func (t *Tracker) holdNew(in *Info, lo, hi uint32, h Held, ts int64, out []Held) (Outcome, []Held) {
	if int64(h.Len) > int64(t.cfg.MaxHeldBytesPerDatagram) {
		return t.dropOne(ReasonHoldLimit), out
	}
	out, ok := t.makeRoom(int64(h.Len), -1, out)
	if !ok {
		return t.dropOne(ReasonOverMemory), out
	}
	i, out := t.alloc(&in.Key, ts, out)
	e := &t.recs[i]
	e.state = statePending
	e.add(lo, hi, in.More) // a fresh record takes any one span
	t.pending.pushBack(&t.ln, i)
	t.hold(i, h)
	return Outcome{Action: Hold}, out
}

// Reject counts a packet Parse refused and, when it is a fragment, drops
// its whole datagram: frames held for it are appended to out with Drop,
// and its later fragments will be dropped until the record times out.
// It always returns Drop with the error's reason.
func (t *Tracker) Reject(in *Info, err error, now time.Time, out []Held) (Outcome, []Held) {
	r := ReasonOf(err)
	if r == ReasonNone {
		r = ReasonMalformed
	}
	t.ctr.in.Add(1)
	if !in.IsFragment {
		return t.dropOne(r), out
	}
	ts := t.clk.at(now)
	out = t.expire(ts, out)
	defer t.publish()
	i := t.idx.find(&in.Key)
	if i < 0 {
		i, out = t.alloc(&in.Key, ts, out)
		e := &t.recs[i]
		e.state, e.reason, e.when = stateBad, r, ts
		t.decided.pushBack(&t.ln, i)
		t.ctr.droppedDatagrams[r].Add(1)
	} else if t.recs[i].state != stateBad {
		out = t.spoil(i, r, ts, out)
	}
	return t.dropOne(r), out
}

// Expire drops the datagrams that waited longer than the timeout for
// their first fragment, appending their frames to out with Drop and
// ReasonTimeout, and forgets verdicts older than the timeout. Call it
// now and then (once per batch is plenty); First, Later and Reject also
// expire what is due.
func (t *Tracker) Expire(now time.Time, out []Held) []Held {
	out = t.expire(t.clk.at(now), out)
	t.publish()
	return out
}

func (t *Tracker) expire(ts int64, out []Held) []Held {
	for i := t.pending.head; i >= 0 && ts-t.recs[i].when >= t.timeout; i = t.pending.head {
		t.ctr.droppedDatagrams[ReasonTimeout].Add(1)
		out = t.giveBack(i, Drop, ReasonTimeout, out)
		t.release(i)
	}
	for i := t.decided.head; i >= 0 && ts-t.recs[i].when >= t.timeout; i = t.decided.head {
		t.ctr.expired.Add(1)
		t.release(i)
	}
	return out
}

// Flush gives back every held frame (Drop, ReasonEvicted) and forgets
// every datagram, for a loop that stops or a policy that changed.
func (t *Tracker) Flush(out []Held) []Held {
	for i := t.pending.head; i >= 0; i = t.pending.head {
		t.ctr.droppedDatagrams[ReasonEvicted].Add(1)
		out = t.giveBack(i, Drop, ReasonEvicted, out)
		t.release(i)
	}
	for i := t.decided.head; i >= 0; i = t.decided.head {
		t.release(i)
	}
	t.publish()
	return out
}

// Forget ends the datagrams of the zones forget names and forgets their
// verdicts. Their held frames go back with action a: Drop (counted as
// evicted) for a zone that goes away, such as a removed port whose number
// may be handed to another; Allow for a zone whose rules are gone, whose
// fragments nothing judges any more.
func (t *Tracker) Forget(forget func(zone uint32) bool, a Action, out []Held) []Held {
	r := ReasonNone
	if a != Allow && a != Deny {
		a, r = Drop, ReasonEvicted
	}
	for _, l := range [...]*list{&t.pending, &t.decided} {
		for i := l.head; i >= 0; {
			next := t.ln.next[i]
			if forget(t.idx.keys[i].Zone) {
				if t.recs[i].state == statePending {
					if a == Drop {
						t.ctr.droppedDatagrams[r].Add(1)
					}
					out = t.giveBack(i, a, r, out)
				}
				t.release(i)
			}
			i = next
		}
	}
	t.publish()
	return out
}

// AppendHeld appends the frames the tracker holds to out (Action Hold),
// without giving them back: for accounting checks that every frame is in
// exactly one place.
func (t *Tracker) AppendHeld(out []Held) []Held {
	for i := t.pending.head; i >= 0; i = t.ln.next[i] {
		for j := t.recs[i].held; j >= 0; j = t.held[j].next {
			h := t.held[j].h
			h.Action, h.Reason = Hold, ReasonNone
			out = append(out, h)
		}
	}
	return out
}

// HeldFrames is how many frames the tracker holds now.
func (t *Tracker) HeldFrames() int { return len(t.held) - len(t.freeHeld) }

// alloc takes a free record for k, evicting the oldest record (pending or
// decided, whichever is older) when the table is full.
func (t *Tracker) alloc(k *Key, ts int64, out []Held) (int32, []Held) {
	if len(t.freeRecs) == 0 {
		v, p := t.decided.head, t.pending.head
		if v < 0 || (p >= 0 && t.recs[p].when <= t.recs[v].when) {
			v = p
		}
		if t.recs[v].state == statePending {
			t.ctr.droppedDatagrams[ReasonEvicted].Add(1)
			out = t.giveBack(v, Drop, ReasonEvicted, out)
		}
		t.release(v)
	}
	n := len(t.freeRecs) - 1
	i := t.freeRecs[n]
	t.freeRecs = t.freeRecs[:n]
	t.recs[i] = record{when: ts, held: -1, heldTail: -1}
	t.idx.insert(k, i)
	return i, out
}

// release forgets record i; its frames must have been given back.
func (t *Tracker) release(i int32) {
	e := &t.recs[i]
	if e.state == statePending {
		t.pending.remove(&t.ln, i)
	} else {
		t.decided.remove(&t.ln, i)
	}
	t.idx.remove(i)
	e.state = stateFree
	t.freeRecs = append(t.freeRecs, i)
}

// makeRoom drops the datagrams that have waited longest, other than keep,
// until one more frame of n bytes fits under the global hold caps. It
// reports false when even that is not enough, which the per-datagram caps
// (within the global ones) rule out.
func (t *Tracker) makeRoom(n int64, keep int32, out []Held) ([]Held, bool) {
	for len(t.freeHeld) == 0 || t.heldLen+n > int64(t.cfg.MaxHeldBytes) {
		v := t.pending.head
		if v == keep {
			v = t.ln.next[v]
		}
		if v < 0 {
			return out, false
		}
		t.ctr.droppedDatagrams[ReasonOverMemory].Add(1)
		out = t.giveBack(v, Drop, ReasonOverMemory, out)
		t.release(v)
	}
	return out, true
}

// hold keeps h for record i, at the end of its queue. makeRoom made room.
func (t *Tracker) hold(i int32, h Held) {
	n := len(t.freeHeld) - 1
	j := t.freeHeld[n]
	t.freeHeld = t.freeHeld[:n]
	h.Action, h.Reason = Hold, ReasonNone
	t.held[j] = heldRec{h: h, next: -1}
	e := &t.recs[i]
	if e.heldTail >= 0 {
		t.held[e.heldTail].next = j
	} else {
		e.held = j
	}
	e.heldTail = j
	e.heldN++
	e.heldLen += int64(h.Len)
	t.heldLen += int64(h.Len)
	t.ctr.held.Add(1)
}

// giveBack appends record i's held frames to out with action a.
func (t *Tracker) giveBack(i int32, a Action, r Reason, out []Held) []Held {
	e := &t.recs[i]
	for j := e.held; j >= 0; {
		h := t.held[j].h
		h.Action, h.Reason = a, r
		if a == Allow || a == Deny {
			h.Tag = e.tag
		}
		out = append(out, h)
		switch a {
		case Allow:
			t.ctr.allowed.Add(1)
			t.ctr.released.Add(1)
		case Deny:
			t.ctr.denied.Add(1)
			t.ctr.released.Add(1)
		default:
			t.ctr.dropped[r].Add(1)
		}
		t.heldLen -= int64(h.Len)
		next := t.held[j].next
		t.held[j] = heldRec{}
		t.freeHeld = append(t.freeHeld, j)
		j = next
	}
	e.held, e.heldTail, e.heldN, e.heldLen = -1, -1, 0, 0
	return out
}

// spoil drops record i's datagram for reason r: its held frames go back
// with Drop, and it stays as a dropped record until the timeout so that
// its remaining fragments are dropped too (RFC 5722).
func (t *Tracker) spoil(i int32, r Reason, ts int64, out []Held) []Held {
	e := &t.recs[i]
	t.ctr.droppedDatagrams[r].Add(1)
	out = t.giveBack(i, Drop, r, out)
	if e.state == statePending {
		t.pending.remove(&t.ln, i)
	} else {
		t.decided.remove(&t.ln, i)
	}
	e.state, e.reason, e.when = stateBad, r, ts
	t.decided.pushBack(&t.ln, i)
	return out
}

func (t *Tracker) dropOne(r Reason) Outcome {
	t.ctr.dropped[r].Add(1)
	return Outcome{Action: Drop, Reason: r}
}

func (t *Tracker) verdict(v Action, tag uint64) Outcome {
	if v == Allow {
		t.ctr.allowed.Add(1)
	} else {
		t.ctr.denied.Add(1)
	}
	return Outcome{Action: v, Tag: tag}
}

func verdictState(v Action) uint8 {
	if v == Allow {
		return stateAllow
	}
	return stateDeny
}

// publish updates the gauges Stats reads.
func (t *Tracker) publish() {
	t.ctr.datagrams.Store(int64(len(t.recs) - len(t.freeRecs)))
	t.ctr.pending.Store(int64(t.pending.n))
	t.ctr.heldFrames.Store(int64(t.HeldFrames()))
	t.ctr.heldBytes.Store(t.heldLen)
}

// TrackerStats are a tracker's counts. Fragment counts add up: In =
// Allowed + Denied + the sum of Dropped + HeldFrames.
type TrackerStats struct {
	// Gauges: records, records waiting for their first fragment, frames
	// and bytes held now.
	Datagrams  int `json:"datagrams"`
	Pending    int `json:"pending"`
	HeldFrames int `json:"held_frames"`
	HeldBytes  int `json:"held_bytes"`
	// In counts fragments given to First, Later and Reject.
	In uint64 `json:"in"`
	// Firsts counts first fragments whose verdict was recorded.
	Firsts uint64 `json:"firsts"`
	// Allowed and Denied count fragments given the datagram's verdict,
	// held ones included when they were released.
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"`
	// Held counts frames taken into hold, Released those given back with
	// a verdict (the others were dropped, see Dropped).
	Held     uint64 `json:"held"`
	Released uint64 `json:"released"`
	// Completed counts records forgotten because every byte of their
	// datagram was seen, Expired those forgotten after the timeout.
	Completed uint64 `json:"completed"`
	Expired   uint64 `json:"expired"`
	// Dropped counts fragments dropped, held ones included, by reason;
	// DroppedDatagrams counts datagrams dropped whole, by reason.
	Dropped          map[string]uint64 `json:"dropped"`
	DroppedDatagrams map[string]uint64 `json:"dropped_datagrams"`
}

// Add adds o's gauges and counts to s, to sum several trackers.
func (s *TrackerStats) Add(o TrackerStats) {
	s.Datagrams += o.Datagrams
	s.Pending += o.Pending
	s.HeldFrames += o.HeldFrames
	s.HeldBytes += o.HeldBytes
	s.In += o.In
	s.Firsts += o.Firsts
	s.Allowed += o.Allowed
	s.Denied += o.Denied
	s.Held += o.Held
	s.Released += o.Released
	s.Completed += o.Completed
	s.Expired += o.Expired
	addCounts(&s.Dropped, o.Dropped)
	addCounts(&s.DroppedDatagrams, o.DroppedDatagrams)
}

// Stats reads the counters; it may be called from any goroutine.
func (t *Tracker) Stats() TrackerStats {
	c := &t.ctr
	s := TrackerStats{
		Datagrams:        int(c.datagrams.Load()),
		Pending:          int(c.pending.Load()),
		HeldFrames:       int(c.heldFrames.Load()),
		HeldBytes:        int(c.heldBytes.Load()),
		In:               c.in.Load(),
		Firsts:           c.firsts.Load(),
		Allowed:          c.allowed.Load(),
		Denied:           c.denied.Load(),
		Held:             c.held.Load(),
		Released:         c.released.Load(),
		Completed:        c.completed.Load(),
		Expired:          c.expired.Load(),
		Dropped:          reasonCounts(&c.dropped),
		DroppedDatagrams: reasonCounts(&c.droppedDatagrams),
	}
	return s
}
