package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// XDPMode is how an XDP program runs on a device.
type XDPMode int

const (
	// XDPModeAuto attaches in driver mode where the device has it and falls
	// back to generic mode otherwise. It is a request, never a result.
	XDPModeAuto XDPMode = iota
	// XDPModeDriver runs the program in the driver, before an skb exists.
	XDPModeDriver
	// XDPModeGeneric runs it on the skb path, for devices without native XDP.
	XDPModeGeneric
)

func (m XDPMode) String() string {
	switch m {
	case XDPModeAuto:
		return "auto"
	case XDPModeDriver:
		return "native"
	case XDPModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("XDPMode(%d)", int(m))
}

// ParseXDPMode reads a mode as written in the config.
func ParseXDPMode(s string) (XDPMode, error) {
	switch s {
	case "", "auto":
		return XDPModeAuto, nil
	case "native", "driver":
		return XDPModeDriver, nil
	case "generic", "skb":
		return XDPModeGeneric, nil
	}
	return 0, fmt.Errorf("unknown XDP mode %q (want auto, native or generic)", s)
}

// MaxQueues is the number of rx queues a port program can steer to sockets.
const MaxQueues = 64

// ErrDeviceBusy is returned for a device that already runs an XDP program.
var ErrDeviceBusy = errors.New("the device already runs an XDP program")

// Port is the port program attached to one device, with its own socket map.
type Port struct {
	objs    portObjects
	link    link.Link
	mode    XDPMode
	ifindex int
}

// AttachPort loads a port program and attaches it to the device. A device
// that already runs an XDP program is refused rather than taken over: that
// program belongs to someone else, most likely another xdpswitchd.
func AttachPort(ifindex int, mode XDPMode) (*Port, error) {
	name, err := deviceName(ifindex, "port program")
	if err != nil {
		return nil, err
	}
	p := &Port{ifindex: ifindex}
	if err := loadPortObjects(&p.objs, nil); err != nil {
		return nil, fmt.Errorf("load port program for %s: %w", name, err)
	}
	if p.link, p.mode, err = attachXDP(p.objs.XdpPort, ifindex, mode); err != nil {
		p.objs.Close()
		return nil, fmt.Errorf("attach port program to %s: %w", name, err)
	}
	return p, nil
}

// Mode is the mode the program was attached in.
func (p *Port) Mode() XDPMode { return p.mode }

// Register steers frames received on queue to the AF_XDP socket fd.
func (p *Port) Register(queue, fd int) error {
	if queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("register socket: queue %d outside 0..%d", queue, MaxQueues-1)
	}
	if err := p.objs.Xsks.Put(uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("register socket for queue %d: %w", queue, err)
	}
	return nil
}

// Unregister sends queue's frames to the kernel stack again.
func (p *Port) Unregister(queue int) error {
	err := p.objs.Xsks.Delete(uint32(queue))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregister socket for queue %d: %w", queue, err)
	}
	return nil
}

// Stats are the program's own counts, summed over CPUs.
type Stats struct {
	Redirected uint64 // handed to a socket
	Passed     uint64 // no socket on that queue: given to the kernel stack
}

// Stats reads the program's counters.
func (p *Port) Stats() (Stats, error) {
	var s Stats
	for key, dst := range []*uint64{&s.Redirected, &s.Passed} {
		var perCPU []uint64
		if err := p.objs.PortStats.Lookup(uint32(key), &perCPU); err != nil {
			return Stats{}, fmt.Errorf("read port program stats: %w", err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return s, nil
}

// Close detaches the program and frees its maps.
func (p *Port) Close() error {
	var errs []error
	if p.link != nil {
		if err := p.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach port program: %w", err))
		}
	}
	if err := p.objs.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
