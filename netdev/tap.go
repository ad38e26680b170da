// Package netdev makes and inspects the network devices the switch plugs
// into: taps for VMs today, host ports later.
package netdev

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TapOptions shape a tap device.
type TapOptions struct {
	// Queues is the number of queues (and file descriptors); frames that
	// the owner writes on fd N arrive on the device's rx queue N.
	Queues int
	// VnetHdr prepends a virtio-net header to every frame, as QEMU's
	// virtio-net backend expects.
	VnetHdr bool
}

// Tap is an open tap device. The device lives while one of its files is
// open, and has carrier only then: a switch sends to it only while its
// owner (QEMU) holds it.
type Tap struct {
	Name  string
	Files []*os.File // one per queue
}

// OpenTap creates (or attaches to) a tap device. An existing tap must have
// been created with the same options.
func OpenTap(name string, opts TapOptions) (*Tap, error) {
	if opts.Queues <= 0 {
		opts.Queues = 1
	}
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap %q: name longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if opts.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	if opts.Queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	t := &Tap{Name: name}
	for q := range opts.Queues {
		// Non-blocking so that reads can carry deadlines through the Go
		// poller; QEMU sets the flag on the fds it is given anyway.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("tap %s: open /dev/net/tun: %w", name, err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			t.Close()
			return nil, fmt.Errorf("tap %s: %w", name, err)
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			t.Close()
			return nil, fmt.Errorf("tap %s: queue %d: TUNSETIFF: %w", name, q, err)
		}
		if opts.VnetHdr {
			// The 12-byte header of VIRTIO_NET_F_MRG_RXBUF / virtio 1.0,
			// which is what QEMU's virtio-net-pci uses.
			size := int32(12)
			if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETVNETHDRSZ, uintptr(unsafe.Pointer(&size))); errno != 0 {
				unix.Close(fd)
				t.Close()
				return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", name, errno)
			}
		}
		t.Files = append(t.Files, os.NewFile(uintptr(fd), fmt.Sprintf("/dev/net/tun:%s:%d", name, q)))
	}
	return t, nil
}

// Persist keeps the device after its files close (TUNSETPERSIST), so that
// one process can create it and another (QEMU) open it.
func (t *Tap) Persist(on bool) error {
	if len(t.Files) == 0 {
		return errors.New("tap is closed")
	}
	v := 0
	if on {
		v = 1
	}
	if err := unix.IoctlSetInt(int(t.Files[0].Fd()), unix.TUNSETPERSIST, v); err != nil {
		return fmt.Errorf("tap %s: TUNSETPERSIST: %w", t.Name, err)
	}
	return nil
}

// Close closes every queue's file. A tap that is not persistent goes away.
func (t *Tap) Close() error {
	var errs []error
	for _, f := range t.Files {
		errs = append(errs, f.Close())
	}
	t.Files = nil
	return errors.Join(errs...)
}
