// Package frag handles IP fragments for the switch, for two users.
//
// The uplink reassembles VXLAN packets that the underlay fragmented before
// decapsulating them: Reassembler, bounded in bytes, datagrams, fragments
// per datagram and time, which drops a datagram whole when its fragments
// overlap (RFC 5722, for IPv4 too).
//
// Policy treats every fragment of a datagram the way it treated the first
// (RFC 8900 §6.3): Tracker records the verdict taken on a datagram's first
// fragment, the only one with the upper-layer header, and applies it to
// the others; fragments that arrive before their first are held (the
// caller's frame handle, not a copy) within hard caps, and released or
// dropped once the verdict is known, or dropped on timeout. It allocates
// nothing per frame.
//
// Both share Parse, which reads IPv4 and IPv6 (with extension header
// chains) and classifies what no honest sender makes: tiny first
// fragments that hide the upper-layer header (RFC 1858, RFC 7112),
// fragments whose length or offset cannot be, chains too long to walk.
//
// Neither structure locks: each is owned by one goroutine (a switching
// loop), except that Stats may be read from any.
package frag
