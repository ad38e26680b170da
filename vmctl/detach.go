package vmctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/xdpswitch/xdpswitch/api"
)

// DefaultDetachTimeout is how long Detach waits for the guest to release a
// NIC unless told otherwise.
const DefaultDetachTimeout = 30 * time.Second

// DetachOptions describe a NIC to unplug from a running VM.
type DetachOptions struct {
	// VM names the VM in messages (the QMP socket's file name when empty).
	VM string
	// QMPSocket is the path of the VM's QMP socket.
	QMPSocket string
	// MAC picks the NIC; nil picks the VM's only NIC attached by vmctl, and
	// is an error when it has several.
	MAC net.HardwareAddr
	// API is the daemon's API; nil leaves the port to the daemon, which
	// removes it by itself once the tap has gone.
	API *api.Client
	// Timeout bounds the wait for the guest to release the NIC
	// (DefaultDetachTimeout when 0).
	Timeout time.Duration
	// Logf, when set, is told each step.
	Logf func(format string, args ...any)
}

// Detach unplugs a NIC that Attach plugged in: QMP device_del, then it
// waits until the guest has released the device (QEMU's DEVICE_DELETED
// event), removes the switch port, then netdev_del, which closes QEMU's
// tap descriptors and so deletes the tap: unplugged before it vanishes, the
// port goes as asked rather than as a device lost. A guest that does not release
// the NIC in time is an error that leaves everything else in place, so the
// NIC keeps working. Parts already gone (an earlier Detach cut short, a port
// the daemon removed when the tap vanished) are no error; a NIC of which
// nothing is left is.
func Detach(ctx context.Context, o DetachOptions) (Attachment, error) {
	if o.VM == "" {
		o.VM = vmName(o.QMPSocket)
	}
	a, err := detach(ctx, &o)
	if err != nil {
		what := "a NIC"
		if o.MAC != nil {
			what = "NIC " + o.MAC.String()
		}
		return Attachment{}, fmt.Errorf("detach %s from %s: %w", what, o.VM, err)
	}
	return a, nil
}

func detach(ctx context.Context, o *DetachOptions) (Attachment, error) {
	if o.QMPSocket == "" {
		return Attachment{}, errors.New("no QMP socket given")
	}
	if o.MAC != nil {
		if err := checkMAC(o.MAC); err != nil {
			return Attachment{}, err
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultDetachTimeout
	}
	logf := func(format string, args ...any) {
		if o.Logf != nil {
			o.Logf("%s: "+format, append([]any{o.VM}, args...)...)
		}
	}
	m, err := dialQMP(ctx, o.QMPSocket)
	if err != nil {
		return Attachment{}, err
	}
	defer m.close()

	nics, err := list(ctx, m, o.VM)
	if err != nil {
		return Attachment{}, err
	}
	var a Attachment
	found := false
	if o.MAC == nil {
		switch len(nics) {
		case 0:
			return Attachment{}, errors.New("the VM has no NIC attached by vmctl")
		case 1:
			a, found = nics[0], true
			o.MAC = a.MAC
		default:
			macs := make([]string, len(nics))
			for i, n := range nics {
				macs[i] = n.MAC.String()
			}
			return Attachment{}, fmt.Errorf("the VM has %d NICs attached by vmctl (%s); pick one by MAC", len(nics), strings.Join(macs, ", "))
		}
	} else {
		tap, dev, nd := Names(o.MAC)
		a = Attachment{VM: o.VM, MAC: o.MAC, Tap: tap, Device: dev, Netdev: nd}
		for _, n := range nics {
			if n.Device == dev {
				a, found = n, true
			}
		}
	}

	// The port comes out after the device: a daemon that cannot be
	// reached would leave the NIC half detached, so it is asked first.
	if o.API != nil {
		if _, err := o.API.Networks(ctx); err != nil {
			return a, fmt.Errorf("the NIC is left as it is: %w", err)
		}
	}
	if found {
		logf("device_del %s, waiting up to %v for the guest to release it", a.Device, o.Timeout)
		if err := removeDevice(ctx, m, a.Device, o.Timeout); err != nil {
			return a, err
		}
		logf("QEMU deleted device %s", a.Device)
	}
	if o.API != nil {
		err := o.API.RemovePort(ctx, a.Tap)
		switch {
		case api.IsNotFound(err):
			// The daemon saw the tap vanish and removed the port itself.
		case err != nil:
			return a, fmt.Errorf("remove port %s: %w", a.Tap, err)
		default:
			found = true
			logf("port %s removed", a.Tap)
		}
	}
	err = m.run(ctx, "netdev_del", map[string]any{"id": a.Netdev}, nil, nil)
	switch {
	case notFound(err):
	case err != nil:
		return a, err
	default:
		found = true
		logf("QEMU netdev %s deleted", a.Netdev)
	}
	if !found {
		return a, fmt.Errorf("the VM has no NIC with MAC %s (no QMP device %s, no netdev %s)", o.MAC, a.Device, a.Netdev)
	}
	if err := waitLinkGone(a.Tap, 2*time.Second); err != nil {
		return a, err
	}
	return a, nil
}

// List returns the NICs of a VM that vmctl attached (those whose QMP device
// id it made), as QEMU knows them, ordered by MAC: Network and Port are left
// empty.
func List(ctx context.Context, qmpSocket string) ([]Attachment, error) {
	vm := vmName(qmpSocket)
	m, err := dialQMP(ctx, qmpSocket)
	if err != nil {
		return nil, fmt.Errorf("list the NICs of %s: %w", vm, err)
	}
	defer m.close()
	nics, err := list(ctx, m, vm)
	if err != nil {
		return nil, fmt.Errorf("list the NICs of %s: %w", vm, err)
	}
	return nics, nil
}

func list(ctx context.Context, m *monitor, vm string) ([]Attachment, error) {
	ps, err := m.peripherals(ctx)
	if err != nil {
		return nil, err
	}
	var out []Attachment
	for _, p := range ps {
		if p.Type != "child<virtio-net-pci>" {
			continue
		}
		mac, ok := macFromDevice(p.Name)
		if !ok {
			continue
		}
		path := "/machine/peripheral/" + p.Name
		var (
			macStr, nd string
			mq         bool
			vectors    int
		)
		if err := m.qomGet(ctx, path, "mac", &macStr); err != nil {
			return nil, err
		}
		if hw, err := net.ParseMAC(macStr); err == nil {
			mac = hw
		}
		if err := m.qomGet(ctx, path, "netdev", &nd); err != nil {
			return nil, err
		}
		if err := m.qomGet(ctx, path, "mq", &mq); err != nil {
			return nil, err
		}
		if err := m.qomGet(ctx, path, "vectors", &vectors); err != nil {
			return nil, err
		}
		queues := 1
		if mq && vectors > 2 {
			queues = (vectors - 2) / 2
		}
		tap, _, _ := Names(mac)
		if nd == "" {
			_, _, nd = Names(mac)
		}
		out = append(out, Attachment{VM: vm, MAC: mac, Tap: tap, Device: p.Name, Netdev: nd, Queues: queues})
	}
	slices.SortFunc(out, func(a, b Attachment) int { return strings.Compare(a.Device, b.Device) })
	return out, nil
}
