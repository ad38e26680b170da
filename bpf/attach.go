package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// deviceName names a device for messages, and refuses one that already
// runs an XDP program: that program belongs to someone else, most likely
// another xdpswitchd, and is not ours to replace.
func deviceName(ifindex int, what string) (string, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("attach %s: device %d: %w", what, ifindex, err)
	}
	name := l.Attrs().Name
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return "", fmt.Errorf("attach %s to %s: %w (program id %d; another xdpswitchd, or another tool, owns it)", what, name, ErrDeviceBusy, x.ProgId)
	}
	return name, nil
}

// attachXDP attaches prog in the requested mode; auto tries driver mode,
// then generic mode for devices without native XDP.
func attachXDP(prog *ebpf.Program, ifindex int, mode XDPMode) (link.Link, XDPMode, error) {
	try := []XDPMode{mode}
	if mode == XDPModeAuto {
		try = []XDPMode{XDPModeDriver, XDPModeGeneric}
	}
	var errs []error
	for _, m := range try {
		flags := link.XDPDriverMode
		if m == XDPModeGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		if err == nil {
			return l, m, nil
		}
		errs = append(errs, fmt.Errorf("%s mode: %w", m, err))
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			break // someone attached meanwhile; another mode would not help
		}
	}
	return nil, 0, errors.Join(errs...)
}
