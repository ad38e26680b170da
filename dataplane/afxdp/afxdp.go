// Package afxdp is the switch's own AF_XDP socket library: UMEM and XDP
// sockets with their four rings, written directly over golang.org/x/sys/unix.
//
// It exists because the dataplane needs, together, what no Go AF_XDP
// library offers: one UMEM shared by the sockets of several devices
// (XDP_SHARED_UMEM, so a frame received on one port is transmitted on another
// without a copy), XDP_USE_NEED_WAKEUP, frame headroom of its own in front
// of every received frame (encapsulation writes there in place), and errors
// instead of panics.
//
// Everything on the per-frame path (Receive, Fill, Transmit, Complete, Kick,
// the free/pending counters) allocates nothing and makes no system call except
// the one sendto a Kick needs. Ring indices are read and written with atomic
// loads and stores, which give the acquire/release ordering the kernel's
// single-producer single-consumer rings expect. The peer's index is cached and
// only re-read when the cached view is exhausted, so a batch costs one or two
// shared-cache-line reads instead of one per descriptor.
//
// A Socket is not safe for concurrent use: the dataplane runs one loop per
// queue index and that loop alone touches the socket's rings. The Umem's
// bookkeeping of its sockets (NewSocket, Socket.Close, Umem.Close) is locked,
// because ports come and go from a control goroutine while loops run.
package afxdp

import (
	"fmt"
	"strings"
)

// Mode selects how a socket moves frames between the device and the UMEM.
type Mode int

const (
	// ModeAuto lets the kernel try zero-copy and fall back to copy mode.
	ModeAuto Mode = iota
	// ModeCopy forces copy mode (XDP_COPY): the kernel copies each frame
	// between its own buffers and the UMEM. Works on every device with XDP.
	ModeCopy
	// ModeZeroCopy forces zero-copy (XDP_ZEROCOPY): the driver DMAs straight
	// into the UMEM. Binding fails on devices without driver support (veth,
	// tap).
	ModeZeroCopy
)

// String returns the name ParseMode accepts.
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zerocopy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "auto", "copy" or "zerocopy" (case-insensitive), the
// spellings an operator writes in the daemon's configuration.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "auto":
		return ModeAuto, nil
	case "copy":
		return ModeCopy, nil
	case "zerocopy":
		return ModeZeroCopy, nil
	}
	return 0, fmt.Errorf("afxdp: unknown mode %q (want auto, copy or zerocopy)", s)
}

func (m Mode) valid() bool { return m >= ModeAuto && m <= ModeZeroCopy }

// Desc is one rx or tx descriptor, laid out exactly like the kernel's
// struct xdp_desc so that ring entries are copied as whole values.
//
// Addr is an offset into the UMEM (not a pointer): on rx it points at the
// first byte of the frame inside its chunk, on tx it is wherever the caller
// put the frame, as long as [Addr, Addr+Len) stays inside one chunk.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// isPow2 reports whether n is a positive power of two, the only sizes the
// kernel accepts for rings and aligned chunks.
func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }
