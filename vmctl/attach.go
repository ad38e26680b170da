package vmctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/netdev"
)

// Bounds of the clean-up after a failed attach, which runs even when the
// caller's context is done.
const (
	rollbackTimeout = 30 * time.Second
	// How often QEMU is asked whether the guest took the NIC.
	pollInterval = 100 * time.Millisecond
)

// releaseTimeout is how long the guest gets to release a NIC that is being
// taken back (a variable for tests).
var releaseTimeout = 10 * time.Second

// offloads are virtio-net-pci's checksum and segmentation offloads, all
// turned off: frames crossing an AF_XDP switch carry no offload state.
var offloads = []string{
	"csum", "guest_csum", "gso",
	"guest_tso4", "guest_tso6", "guest_ecn", "guest_ufo",
	"host_tso4", "host_tso6", "host_ecn", "host_ufo",
}

// AttachOptions describe a NIC to plug into a running VM.
type AttachOptions struct {
	// VM names the VM in messages (the QMP socket's file name when empty).
	VM string
	// QMPSocket is the path of the VM's QMP socket (QEMU's
	// -qmp unix:PATH,server=on,wait=off).
	QMPSocket string
	// Network is the switch network the NIC joins.
	Network string
	// MAC is the guest NIC's address; nil picks a random 52:54:00:xx:xx:xx.
	MAC net.HardwareAddr
	// Queues is the number of queue pairs (1 when 0).
	Queues int
	// Bus is the PCI bus the NIC goes on (a PCIe root port's id, say).
	// Empty lets QEMU choose, and where its root bus takes no hot-plugged
	// device (a q35 machine) the empty root ports are tried in turn.
	Bus string
	// API is the daemon's API.
	API *api.Client
	// WaitGuest is how long to wait for the guest's driver to take the NIC
	// (virtio DRIVER_OK); 0 does not wait. A device_add that reaches a
	// guest still booting can be lost: waiting turns that into an error
	// instead of a NIC that never comes up.
	WaitGuest time.Duration
	// NoSecurity plugs the NIC in without port security, which otherwise
	// holds it to its own MAC and addresses.
	NoSecurity bool
	// Rules are the port's own rules, in force from its first frame.
	Rules *api.Ruleset
	// Logf, when set, is told each step.
	Logf func(format string, args ...any)
}

// Attach plugs a new NIC into a running VM and connects it to a switch
// network. On any failure, also when ctx ends, it undoes what it did, in
// reverse order, and the error says what failed (and what could not be
// undone). It never leaves a half-plugged NIC behind that it could remove.
func Attach(ctx context.Context, o AttachOptions) (Attachment, error) {
	if o.VM == "" {
		o.VM = vmName(o.QMPSocket)
	}
	if o.Queues == 0 {
		o.Queues = 1
	}
	a, err := attach(ctx, &o)
	if err != nil {
		what := "a NIC"
		if o.MAC != nil {
			what = "NIC " + o.MAC.String()
		}
		return Attachment{}, fmt.Errorf("attach %s to %s: %w", what, o.VM, err)
	}
	return a, nil
}

func attach(ctx context.Context, o *AttachOptions) (a Attachment, err error) {
	switch {
	case o.QMPSocket == "":
		return a, errors.New("no QMP socket given")
	case o.Network == "":
		return a, errors.New("no network given")
	case o.API == nil:
		return a, errors.New("no API client given")
	case o.Queues < 0 || o.Queues > MaxQueues:
		return a, fmt.Errorf("%d queues: a NIC has 1 to %d", o.Queues, MaxQueues)
	case o.WaitGuest < 0:
		return a, fmt.Errorf("negative wait %v", o.WaitGuest)
	}
	if o.MAC != nil {
		if err := checkMAC(o.MAC); err != nil {
			return a, err
		}
	}
	logf := func(format string, args ...any) {
		if o.Logf != nil {
			o.Logf("%s: "+format, append([]any{o.VM}, args...)...)
		}
	}

	m, err := dialQMP(ctx, o.QMPSocket)
	if err != nil {
		return a, err
	}
	defer func() { m.close() }()

	// Refuse a NIC whose names are taken, before anything is made: undoing
	// would remove someone else's device.
	existing, err := m.peripherals(ctx)
	if err != nil {
		return a, err
	}
	macs, err := nicMACs(ctx, m, existing)
	if err != nil {
		return a, err
	}
	taken := func(mac net.HardwareAddr) error {
		tap, dev, _ := Names(mac)
		for _, p := range existing {
			if p.Name == dev {
				return fmt.Errorf("the VM already has a NIC with MAC %s (QMP device %s)", mac, dev)
			}
		}
		if path, ok := macs[mac.String()]; ok {
			return fmt.Errorf("the VM already has a NIC with MAC %s (%s)", mac, path)
		}
		if _, err := net.InterfaceByName(tap); err == nil {
			return fmt.Errorf("the host already has a device %s (MAC %s is in use)", tap, mac)
		}
		return nil
	}
	if o.MAC == nil {
		for range 10 {
			mac := RandomMAC()
			if taken(mac) == nil {
				o.MAC = mac
				break
			}
		}
		if o.MAC == nil {
			return a, errors.New("no free random MAC found")
		}
	} else if err := taken(o.MAC); err != nil {
		return a, err
	}

	tapName, devID, ndID := Names(o.MAC)
	a = Attachment{VM: o.VM, MAC: o.MAC, Tap: tapName, Device: devID, Netdev: ndID, Queues: o.Queues, Network: o.Network}
	var undo rollback
	undo.mon, undo.socket, undo.logf = m, o.QMPSocket, logf
	defer func() {
		if err != nil {
			if uerr := undo.run(ctx); uerr != nil {
				err = fmt.Errorf("%w (undoing it: %v)", err, uerr)
			}
		}
	}()

	// Runs last: the tap must be gone once QEMU let go of it.
	undo.push("delete tap "+tapName, func(context.Context, *monitor) error { return waitLinkGone(tapName, time.Second) })
	tap, err := netdev.OpenTap(tapName, netdev.TapOptions{Queues: o.Queues, VnetHdr: true})
	if err != nil {
		return a, err
	}
	// Our copies of the tap's descriptors go at the end, whatever happens:
	// QEMU holds its own, and the tap lives as long as QEMU does.
	defer tap.Close()
	undo.push("close the descriptors of tap "+tapName, func(context.Context, *monitor) error { return tap.Close() })
	logf("created tap %s with %d queue(s)", tapName, o.Queues)

	security := !o.NoSecurity
	port, err := o.API.AddPortWith(ctx, api.AddPort{Name: tapName, Network: o.Network, MAC: o.MAC.String(), Security: &security, Rules: o.Rules})
	var (
		refusal *api.StatusError
		sysErr  *os.SyscallError
	)
	// The daemon said no, or its socket could not be reached: no port.
	noPort := errors.As(err, &refusal) || errors.As(err, &sysErr) && sysErr.Syscall == "connect"
	if err == nil || !noPort {
		// Added, or no answer: the port may be there.
		undo.push("remove port "+tapName, func(ctx context.Context, _ *monitor) error {
			err := o.API.RemovePort(ctx, tapName)
			if api.IsNotFound(err) {
				return nil
			}
			return err
		})
	}
	if err != nil {
		return a, fmt.Errorf("add port %s to network %s: %w", tapName, o.Network, err)
	}
	a.Port = port
	logf("port %s added to network %s", tapName, o.Network)

	fdNames := make([]string, len(tap.Files))
	for q, f := range tap.Files {
		name := fmt.Sprintf("%s-fd%d", ndID, q)
		fdNames[q] = name
		err := m.run(ctx, "getfd", map[string]any{"fdname": name}, f, nil)
		if !refused(err) {
			undo.pushQMP("closefd", name, map[string]any{"fdname": name})
		}
		if err != nil {
			return a, err
		}
	}
	nd := map[string]any{"type": "tap", "id": ndID, "vhost": false}
	if len(fdNames) == 1 {
		nd["fd"] = fdNames[0]
	} else {
		nd["fds"] = strings.Join(fdNames, ":")
	}
	err = m.run(ctx, "netdev_add", nd, nil, nil)
	if !refused(err) {
		undo.pushQMP("netdev_del", ndID, map[string]any{"id": ndID})
	}
	if err != nil {
		return a, err
	}
	logf("QEMU netdev %s on tap %s", ndID, tapName)

	dev := map[string]any{
		"driver":  "virtio-net-pci",
		"id":      devID,
		"netdev":  ndID,
		"mac":     o.MAC.String(),
		"romfile": "",
	}
	for _, p := range offloads {
		dev[p] = false
	}
	if o.Queues > 1 {
		dev["mq"] = true
		dev["vectors"] = 2*o.Queues + 2
	}
	if o.Bus != "" {
		dev["bus"] = o.Bus
	}
	err = m.run(ctx, "device_add", dev, nil, nil)
	if o.Bus == "" && noHotplug(err) {
		err = addOnRootPort(ctx, m, dev, err, logf)
	}
	if !refused(err) {
		undo.pushDevice(devID)
	}
	if err != nil {
		return a, err
	}
	logf("QEMU device %s (virtio-net-pci, MAC %s) added", devID, o.MAC)

	if o.WaitGuest > 0 {
		logf("waiting up to %v for the guest to take the NIC", o.WaitGuest)
		if err := waitDriverOK(ctx, m, devID, o.WaitGuest); err != nil {
			return a, err
		}
		a.GuestReady = true
		logf("the guest took the NIC")
	}
	return a, nil
}

// waitDriverOK polls QEMU until the guest's driver has set DRIVER_OK on the
// device's virtio status, that is until the guest took the NIC.
func waitDriverOK(ctx context.Context, m *monitor, devID string, within time.Duration) error {
	deadline := time.Now().Add(within)
	path := "/machine/peripheral/" + devID + "/virtio-backend"
	for {
		var st struct {
			Status struct {
				Statuses []string `json:"statuses"`
			} `json:"status"`
		}
		err := m.run(ctx, "x-query-virtio-status", map[string]any{"path": path}, nil, &st)
		if commandNotFound(err) {
			return fmt.Errorf("this QEMU cannot tell whether the guest took the NIC (no x-query-virtio-status, QEMU 7.2 or later has it); attach without waiting: %w", err)
		}
		if err != nil {
			return fmt.Errorf("waiting for the guest to take the NIC: %w", err)
		}
		for _, s := range st.Status.Statuses {
			// "VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready"
			if strings.Contains(s, "DRIVER_OK") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest did not take the NIC within %v (no virtio-net driver in the guest, or the hot-plug reached it while it was still booting)", within)
		}
		select {
		case <-time.After(pollInterval):
		case <-ctx.Done():
			return fmt.Errorf("waiting for the guest to take the NIC: %w", ctx.Err())
		}
	}
}

// rollback undoes an attach step by step, in reverse order.
type rollback struct {
	mon    *monitor
	socket string
	logf   func(format string, args ...any)
	steps  []undoStep
}

type undoStep struct {
	what string
	qmp  bool // needs the QMP connection
	fn   func(ctx context.Context, m *monitor) error
}

func (u *rollback) push(what string, fn func(ctx context.Context, m *monitor) error) {
	u.steps = append(u.steps, undoStep{what: what, fn: fn})
}

// pushQMP undoes with a QMP command; a thing QEMU does not know (it was
// never made, or QEMU took it over) needs no undoing.
func (u *rollback) pushQMP(cmd, name string, args map[string]any) {
	u.steps = append(u.steps, undoStep{what: cmd + " " + name, qmp: true, fn: func(ctx context.Context, m *monitor) error {
		err := m.run(ctx, cmd, args, nil, nil)
		if notFound(err) {
			return nil
		}
		return err
	}})
}

// pushDevice undoes a device_add: device_del, then the guest must release
// the device before QEMU lets go of it.
func (u *rollback) pushDevice(id string) {
	u.steps = append(u.steps, undoStep{what: "device_del " + id, qmp: true, fn: func(ctx context.Context, m *monitor) error {
		return removeDevice(ctx, m, id, releaseTimeout)
	}})
}

// removeDevice asks QEMU to unplug a device and waits until the guest has
// released it. A device that does not exist is no error.
func removeDevice(ctx context.Context, m *monitor, id string, within time.Duration) error {
	err := m.run(ctx, "device_del", map[string]any{"id": id}, nil, nil)
	if notFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	if err := m.waitDeleted(wctx, id); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the guest did not release %s within %v; QEMU removes it if the guest ever does", id, within)
		}
		return err
	}
	return nil
}

// run undoes every step, also after one failed, and reports what could not
// be undone. It gets its own time: the caller's context may be what ended
// the attach.
func (u *rollback) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	m := u.mon
	var (
		errs    []string
		qemuErr error // why QEMU cannot be reached any more
		gone    bool  // QEMU has exited: it holds nothing any more
	)
	for i := len(u.steps) - 1; i >= 0; i-- {
		s := u.steps[i]
		if s.qmp {
			if gone {
				continue
			}
			if m.closed() && qemuErr == nil {
				// The connection broke (or a command timed out): one
				// more connection for the clean-up.
				m2, err := dialQMP(ctx, u.socket)
				if err != nil {
					qemuErr = err
				} else {
					defer m2.close()
					m = m2
				}
			}
			if qemuErr != nil {
				if qemuGone(qemuErr) {
					gone = true
					u.logf("QEMU is gone; nothing to undo there")
					continue
				}
				errs = append(errs, s.what+": "+qemuErr.Error())
				continue
			}
		}
		if err := s.fn(ctx, m); err != nil {
			if s.qmp && qemuGone(err) {
				gone = true
				u.logf("QEMU is gone; nothing to undo there")
				continue
			}
			errs = append(errs, s.what+": "+err.Error())
			continue
		}
		u.logf("undone: %s", s.what)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// waitLinkGone waits until no network device is named name.
func waitLinkGone(name string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if _, err := net.InterfaceByName(name); err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tap %s still exists (QEMU still holds it)", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vmName names a VM after its QMP socket when the caller did not name it.
func vmName(socket string) string {
	n := strings.TrimSuffix(filepath.Base(socket), filepath.Ext(socket))
	if n == "" || n == "." || n == "/" {
		return "the VM"
	}
	return n
}

// noHotplug tells whether QEMU refused a device because the bus it chose
// takes no hot-plugged devices: the root bus of a q35 machine.
func noHotplug(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe) && qe.Class != "" && strings.Contains(qe.Desc, "does not support hotplugging")
}

// pciDevice is what query-pci says of a device: a bridge has the
// devices behind it.
type pciDevice struct {
	QdevID string `json:"qdev_id"`
	Bridge *struct {
		Devices []pciDevice `json:"devices"`
	} `json:"pci_bridge"`
}

// freeBuses lists the buses that may take one more NIC: the bridges (PCIe
// root ports, on q35) that have an id to name them by and nothing behind
// them, as far as query-pci can tell.
func freeBuses(ctx context.Context, m *monitor) ([]string, error) {
	var buses []struct {
		Devices []pciDevice `json:"devices"`
	}
	if err := m.run(ctx, "query-pci", nil, nil, &buses); err != nil {
		return nil, err
	}
	var out []string
	for _, b := range buses {
		out = emptyBridges(b.Devices, out)
	}
	return out, nil
}

// addOnRootPort adds dev on the first empty PCIe root port that takes it,
// after the root bus refused it with err (a q35 machine). A root port the
// guest's firmware has not numbered yet looks empty whatever it holds: on
// a refusal the next one is tried. The NIC takes slot 0, the only one a
// root port's guest sees; QEMU would put it in another beside a device
// already there.
func addOnRootPort(ctx context.Context, m *monitor, dev map[string]any, err error, logf func(string, ...any)) error {
	buses, ferr := freeBuses(ctx, m)
	if ferr != nil {
		return ferr
	}
	if len(buses) == 0 {
		return fmt.Errorf("%w (a q35 machine, with no empty PCIe root port for the NIC: start the VM with one per NIC to attach, -device pcie-root-port,id=rp1,chassis=1, or name a bus with --bus)", err)
	}
	for _, bus := range buses {
		logf("QEMU's root bus takes no hot-plugged device; trying %s", bus)
		dev["bus"], dev["addr"] = bus, "0"
		if err = m.run(ctx, "device_add", dev, nil, nil); !refused(err) {
			return err
		}
	}
	return fmt.Errorf("%w (no PCIe root port took the NIC: start the VM with one per NIC to attach, or name a bus with --bus)", err)
}

func emptyBridges(devs []pciDevice, out []string) []string {
	for _, d := range devs {
		if d.Bridge == nil {
			continue
		}
		if len(d.Bridge.Devices) == 0 && d.QdevID != "" {
			out = append(out, d.QdevID)
		}
		out = emptyBridges(d.Bridge.Devices, out)
	}
	return out
}

// nicMACs maps the MAC of every NIC of the VM, vmctl's or not, to its QOM
// path: QEMU lets two NICs have one MAC, which the guest's network would
// not survive. NICs made with -device are peripherals (anonymous without
// an id), those made with -nic or -net nic are unattached, among the
// machine's own devices; a device without a mac property is no NIC.
// (query-rx-filter would be one command, but knows only virtio-net.)
// peripherals is the listing of /machine/peripheral, which attach has.
func nicMACs(ctx context.Context, m *monitor, peripherals []peripheral) (map[string]string, error) {
	out := map[string]string{}
	for _, dir := range []string{"/machine/peripheral", "/machine/peripheral-anon", "/machine/unattached"} {
		ps := peripherals
		if dir != "/machine/peripheral" {
			var err error
			ps, err = m.qomList(ctx, dir)
			if refused(err) {
				continue // a machine without such devices
			}
			if err != nil {
				return nil, err
			}
		}
		for _, p := range ps {
			if !strings.HasPrefix(p.Type, "child<") {
				continue
			}
			var mac string
			path := dir + "/" + p.Name
			if err := m.qomGet(ctx, path, "mac", &mac); err != nil {
				if refused(err) {
					continue
				}
				return nil, err
			}
			if hw, err := net.ParseMAC(mac); err == nil {
				out[hw.String()] = path
			}
		}
	}
	return out, nil
}
