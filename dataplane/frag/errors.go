package frag

import "sync/atomic"

// Reason says why a fragment (or a whole datagram) was dropped. Every drop
// either structure makes is counted under one reason.
type Reason uint8

const (
	// ReasonNone: not dropped.
	ReasonNone Reason = iota
	// ReasonMalformed: not an IPv4 or IPv6 packet, or a header that
	// claims more bytes than the packet holds, a bad IHL, a Hop-by-Hop
	// header anywhere but first.
	ReasonMalformed
	// ReasonBadFragment: a fragment no sender makes: empty, a non-last
	// fragment whose length is not a multiple of 8, a second Fragment
	// header, or a length that disagrees with the datagram's last
	// fragment.
	ReasonBadFragment
	// ReasonTooBig: the datagram would be longer than IP allows (65535
	// bytes of IPv4 datagram or of IPv6 payload) or than the configured
	// maximum.
	ReasonTooBig
	// ReasonTinyFirst: a first fragment too short to hold the whole
	// upper-layer header (RFC 1858), or for IPv6 the whole extension
	// header chain and upper-layer header (RFC 7112).
	ReasonTinyFirst
	// ReasonHeaderOverwrite: a later fragment that starts inside the
	// upper-layer header a valid first fragment must carry, such as an
	// IPv4 TCP fragment at offset 8 (RFC 1858 §3.2).
	ReasonHeaderOverwrite
	// ReasonTooManyHeaders: an IPv6 extension header chain longer than
	// MaxExtHeaders.
	ReasonTooManyHeaders
	// ReasonOverlap: fragments of one datagram that overlap (RFC 5722);
	// the whole datagram is dropped.
	ReasonOverlap
	// ReasonTooManyFragments: a datagram cut into more pieces than the
	// structure tracks per datagram.
	ReasonTooManyFragments
	// ReasonTimeout: the datagram was not complete (or its first
	// fragment not seen) within the timeout.
	ReasonTimeout
	// ReasonEvicted: the datagram's record was evicted, oldest first, to
	// make room for a new datagram (the datagram cap).
	ReasonEvicted
	// ReasonOverMemory: the datagram's bytes were evicted, oldest first,
	// to stay within the memory cap (the reassembler's bytes, the
	// tracker's held frames and bytes).
	ReasonOverMemory
	// ReasonHoldLimit: a datagram holding more fragments or bytes than
	// the per-datagram hold caps allow, waiting for its first fragment.
	ReasonHoldLimit
	// ReasonECN: fragments that mix ECN-capable and not ECN-capable
	// codepoints (RFC 3168 §5.3).
	ReasonECN

	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:             "none",
	ReasonMalformed:        "malformed",
	ReasonBadFragment:      "bad_fragment",
	ReasonTooBig:           "too_big",
	ReasonTinyFirst:        "tiny_first",
	ReasonHeaderOverwrite:  "header_overwrite",
	ReasonTooManyHeaders:   "too_many_headers",
	ReasonOverlap:          "overlap",
	ReasonTooManyFragments: "too_many_fragments",
	ReasonTimeout:          "timed_out",
	ReasonEvicted:          "evicted",
	ReasonOverMemory:       "over_memory",
	ReasonHoldLimit:        "hold_limit",
	ReasonECN:              "ecn",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Error is what Parse and Reassembler.Add return: a fixed value per
// reason, so returning one never allocates. Compare with == or errors.Is.
type Error struct {
	Reason Reason
	msg    string
}

func (e *Error) Error() string { return "frag: " + e.msg }

// The errors Parse and Reassembler.Add return.
var (
	ErrMalformed        = &Error{ReasonMalformed, "malformed IP packet"}
	ErrBadFragment      = &Error{ReasonBadFragment, "bad fragment"}
	ErrTooBig           = &Error{ReasonTooBig, "datagram too big"}
	ErrTinyFirst        = &Error{ReasonTinyFirst, "first fragment does not hold the whole upper-layer header"}
	ErrHeaderOverwrite  = &Error{ReasonHeaderOverwrite, "fragment overlaps the upper-layer header"}
	ErrTooManyHeaders   = &Error{ReasonTooManyHeaders, "too many IPv6 extension headers"}
	ErrOverlap          = &Error{ReasonOverlap, "overlapping fragments"}
	ErrTooManyFragments = &Error{ReasonTooManyFragments, "too many fragments in one datagram"}
	ErrOverMemory       = &Error{ReasonOverMemory, "reassembly memory exhausted"}
	ErrECN              = &Error{ReasonECN, "fragments disagree on ECN"}
	// ErrNotFragment is returned by Reassembler.Add for a packet that
	// is not a fragment: the caller should not have passed it.
	ErrNotFragment = &Error{ReasonNone, "not a fragment"}
)

var errByReason [numReasons]*Error

func init() {
	for _, e := range []*Error{ErrMalformed, ErrBadFragment, ErrTooBig, ErrTinyFirst,
		ErrHeaderOverwrite, ErrTooManyHeaders, ErrOverlap, ErrTooManyFragments,
		ErrOverMemory, ErrECN} {
		errByReason[e.Reason] = e
	}
	errByReason[ReasonTimeout] = &Error{ReasonTimeout, "datagram timed out"}
	errByReason[ReasonEvicted] = &Error{ReasonEvicted, "datagram evicted"}
	errByReason[ReasonHoldLimit] = &Error{ReasonHoldLimit, "too many fragments held"}
}

// ReasonOf maps an error from this package to its reason; any other
// non-nil error is ReasonMalformed, nil is ReasonNone.
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	if e, ok := err.(*Error); ok {
		if e.Reason == ReasonNone {
			return ReasonMalformed
		}
		return e.Reason
	}
	return ReasonMalformed
}

// errOf is the fixed error value for a reason.
func errOf(r Reason) error {
	if r < numReasons && errByReason[r] != nil {
		return errByReason[r]
	}
	return ErrMalformed
}

// addCounts adds the counts of src to *dst, making *dst when it is nil.
func addCounts(dst *map[string]uint64, src map[string]uint64) {
	if *dst == nil {
		*dst = make(map[string]uint64, len(src))
	}
	for k, v := range src {
		(*dst)[k] += v
	}
}

// reasonCounts is a map, by reason name, of the reasons whose count is not
// zero: what Stats reports.
func reasonCounts(c *[numReasons]atomic.Uint64) map[string]uint64 {
	m := make(map[string]uint64)
	for r := Reason(1); r < numReasons; r++ {
		if n := c[r].Load(); n > 0 {
			m[r.String()] = n
		}
	}
	return m
}
