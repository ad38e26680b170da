package frag_test

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/xdpswitch/xdpswitch/dataplane/frag"
)

// fragment4 builds one IPv4 UDP fragment of datagram id.
func fragment4(id uint16, off int, more bool, data []byte) []byte {
	p := make([]byte, 20+len(data))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], id)
	fo := uint16(off / 8)
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(p[6:], fo)
	p[8], p[9] = 64, 17
	copy(p[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	copy(p[20:], data)
	return p
}

// The per-packet flow of a switching loop: the second fragment arrives
// before the first and is held; the first fragment's verdict releases it.
func ExampleTracker() {
	t := frag.NewTracker(frag.TrackerConfig{})
	out := make([]frag.Held, 0, t.Config().MaxHeldFrames)
	now := time.Now()
	udp := make([]byte, 16)
	binary.BigEndian.PutUint16(udp[2:], 53) // destination port

	packets := [][]byte{
		fragment4(7, 16, false, make([]byte, 8)), // the tail first
		fragment4(7, 0, true, udp),               // then the head
	}
	for n, ip := range packets {
		handle := uint64(n) // the frame's UMEM address, say
		info, err := frag.Parse(ip)
		var o frag.Outcome
		switch {
		case err != nil:
			o, out = t.Reject(&info, err, now, out[:0])
		case !info.IsFragment:
			continue // apply the policy as to any packet
		case info.First:
			verdict := frag.Deny
			if binary.BigEndian.Uint16(info.L4[2:]) == 53 {
				verdict = frag.Allow
			}
			o, out = t.First(&info, verdict, now, out[:0])
		default:
			o, out = t.Later(&info, frag.Held{Handle: handle, Len: uint32(len(ip))}, now, out[:0])
		}
		fmt.Printf("frame %d: %v\n", handle, o.Action)
		for _, h := range out {
			fmt.Printf("  frame %d given back: %v\n", h.Handle, h.Action)
		}
	}
	// Output:
	// frame 0: hold
	// frame 1: allow
	//   frame 0 given back: allow
}
