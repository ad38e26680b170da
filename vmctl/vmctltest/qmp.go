package vmctltest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Action is what the fake QEMU does with one command instead of answering
// it plainly.
type Action struct {
	// Fail refuses the command with this description, doing nothing.
	Fail string
	// Hang does the command but never answers.
	Hang bool
	// Exit closes the connection and the socket and drops everything, as
	// a QEMU that died on receiving the command.
	Exit bool
	// Delay does the command and answers it after this long; the
	// commands after it wait.
	Delay time.Duration
}

// QMP is a fake QEMU behind a QMP socket: it keeps named file descriptors
// (getfd, closefd), tap netdevs that own their descriptors (netdev_add,
// netdev_del) and virtio-net-pci devices (device_add, device_del with a
// DEVICE_DELETED event, qom-list, qom-get, x-query-virtio-status), and
// serves one client at a time like QEMU.
type QMP struct {
	// Socket is where it listens.
	Socket string

	l net.Listener

	mu       sync.Mutex
	conn     net.Conn
	exited   bool
	driverOK bool // the guest takes new NICs
	release  bool // the guest releases NICs on device_del
	noisy    bool // an unrelated event precedes every answer
	// rootPorts, when set, makes it a q35 machine: its root bus takes no
	// hot-plugged device, each of these PCIe root ports takes one.
	rootPorts []string
	// unnumbered root ports hide what they hold from query-pci, as before
	// the guest's firmware gives them a bus number.
	unnumbered []string
	// bootNICs are NICs the VM was started with (-nic): QOM has them
	// under /machine/unattached, after a CPU.
	bootNICs []string
	actions  map[string]Action
	log      []string
	fds      map[string]*os.File
	netdevs  map[string]*netdev
	devices  []*device
}

type netdev struct {
	id      string
	files   []*os.File
	deleted bool // netdev_del while a device used it: freed with the device
}

type device struct {
	id    string
	props map[string]any
}

// NewQMP starts a fake QEMU whose guest takes and releases NICs promptly.
// It exits when the test ends.
func NewQMP(t testing.TB) *QMP {
	t.Helper()
	dir, err := os.MkdirTemp("", "xsqmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	q := &QMP{
		Socket:   filepath.Join(dir, "vm.qmp"),
		driverOK: true,
		release:  true,
		actions:  map[string]Action{},
		fds:      map[string]*os.File{},
		netdevs:  map[string]*netdev{},
	}
	q.l, err = net.Listen("unix", q.Socket)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := q.l.Accept()
			if err != nil {
				return
			}
			q.serve(c.(*net.UnixConn))
		}
	}()
	t.Cleanup(q.Exit)
	return q
}

// On makes the fake do a on every later command named cmd.
func (q *QMP) On(cmd string, a Action) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.actions[cmd] = a
}

// SetGuest says whether the guest takes new NICs (its driver sets
// DRIVER_OK) and whether it releases NICs on device_del.
func (q *QMP) SetGuest(takes, releases bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.driverOK, q.release = takes, releases
}

// AddBootNIC gives the VM a NIC it was started with (-nic), an e1000
// with this MAC.
func (q *QMP) AddBootNIC(mac string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.bootNICs = append(q.bootNICs, mac)
}

// SetRootPorts makes the VM a q35 machine with these (empty) PCIe root
// ports, where device_add must name one as its bus.
func (q *QMP) SetRootPorts(ids ...string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.rootPorts = ids
}

// SetUnnumbered makes query-pci show these root ports empty, whatever
// they hold, as QEMU does before the guest's firmware numbers their buses.
func (q *QMP) SetUnnumbered(ids ...string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.unnumbered = ids
}

// SetNoisy makes an unrelated event precede every answer, the greeting's
// handshake included, as a busy QEMU's can.
func (q *QMP) SetNoisy(on bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.noisy = on
}

// Commands returns the commands received so far, in order, each as its
// name and, for those that name something, the id or fd name:
// "getfd xsnd-...-fd0", "device_add xs-...", "qom-list".
func (q *QMP) Commands() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.log)
}

// Devices returns the ids of the devices, in the order they were added.
func (q *QMP) Devices() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for _, d := range q.devices {
		out = append(out, d.id)
	}
	return out
}

// Device returns the properties a device was added with, nil when there is
// no such device.
func (q *QMP) Device(id string) map[string]any {
	q.mu.Lock()
	defer q.mu.Unlock()
	if d := q.device(id); d != nil {
		return d.props
	}
	return nil
}

// Netdevs returns the ids of the netdevs that still hold file descriptors,
// sorted.
func (q *QMP) Netdevs() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for id := range q.netdevs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// FDs returns the names of the file descriptors given with getfd and not
// yet used or closed, sorted.
func (q *QMP) FDs() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for n := range q.fds {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Held returns how many file descriptors the fake holds: named ones and
// those of its netdevs.
func (q *QMP) Held() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.fds)
	for _, nd := range q.netdevs {
		n += len(nd.files)
	}
	return n
}

// Exit stops the fake as a QEMU that was killed: the connection and the
// socket go, and so does every file descriptor it held.
func (q *QMP) Exit() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.exitLocked()
}

func (q *QMP) exitLocked() {
	if q.exited {
		return
	}
	q.exited = true
	q.l.Close()
	os.Remove(q.Socket)
	if q.conn != nil {
		q.conn.Close()
	}
	for n, f := range q.fds {
		f.Close()
		delete(q.fds, n)
	}
	for id, nd := range q.netdevs {
		for _, f := range nd.files {
			f.Close()
		}
		delete(q.netdevs, id)
	}
	q.devices = nil
}

type request struct {
	Execute   string         `json:"execute"`
	Arguments map[string]any `json:"arguments"`
	ID        any            `json:"id"`
}

type qmpError struct {
	class, desc string
}

func (q *QMP) serve(c *net.UnixConn) {
	defer c.Close()
	q.mu.Lock()
	if q.exited {
		q.mu.Unlock()
		return
	}
	q.conn = c
	q.mu.Unlock()
	var pending []*os.File
	defer func() {
		for _, f := range pending {
			f.Close()
		}
	}()
	if !q.write(c, map[string]any{"QMP": map[string]any{
		"version":      map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 0}, "package": "vmctltest"},
		"capabilities": []string{"oob"},
	}}) {
		return
	}
	var buf []byte
	b := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(16*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(b, oob)
		if oobn > 0 {
			msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr == nil {
				for _, m := range msgs {
					fds, err := unix.ParseUnixRights(&m)
					if err != nil {
						continue
					}
					for _, fd := range fds {
						pending = append(pending, os.NewFile(uintptr(fd), "qmp-fd"))
					}
				}
			}
		}
		if err != nil || n <= 0 {
			return
		}
		buf = append(buf, b[:n]...)
		for {
			dec := json.NewDecoder(bytes.NewReader(buf))
			var req request
			err := dec.Decode(&req)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				buf = nil
				if !q.write(c, errorReply(qmpError{"GenericError", "JSON parse error, " + err.Error()})) {
					return
				}
				break
			}
			buf = buf[dec.InputOffset():]
			if !q.handle(c, req, &pending) {
				return
			}
			for _, f := range pending {
				f.Close()
			}
			pending = nil
		}
	}
}

// handle runs one command and answers it; false ends the connection.
func (q *QMP) handle(c *net.UnixConn, req request, pending *[]*os.File) bool {
	out, ok := q.answer(req, pending)
	if !ok {
		return false
	}
	for _, m := range out {
		if d, isDelay := m.(time.Duration); isDelay {
			time.Sleep(d)
			continue
		}
		if !q.write(c, m) {
			return false
		}
	}
	return true
}

// answer carries out a command and returns what to send back (messages,
// and pauses as time.Duration); false ends the connection.
func (q *QMP) answer(req request, pending *[]*os.File) ([]any, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.exited {
		return nil, false
	}
	entry := req.Execute
	for _, k := range []string{"id", "fdname"} {
		if s, ok := req.Arguments[k].(string); ok {
			entry += " " + s
			break
		}
	}
	q.log = append(q.log, entry)
	act := q.actions[req.Execute]
	if act.Exit {
		q.exitLocked()
		return nil, false
	}
	var out []any
	if q.noisy {
		// An event that has nothing to do with the command comes first.
		out = append(out, event("NIC_RX_FILTER_CHANGED", map[string]any{"path": "/machine/peripheral/other/virtio-backend"}))
	}
	if act.Fail != "" {
		return append(out, withID(errorReply(qmpError{"GenericError", act.Fail}), req.ID)), true
	}
	ret, events, qerr := q.do(req, pending)
	if act.Hang {
		return out, true
	}
	if act.Delay > 0 {
		out = append(out, act.Delay)
	}
	if qerr != nil {
		out = append(out, withID(errorReply(*qerr), req.ID))
	} else {
		out = append(out, withID(map[string]any{"return": ret}, req.ID))
	}
	return append(out, events...), true
}

func (q *QMP) write(c net.Conn, v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Write(append(b, '\r', '\n'))
	return err == nil
}

func errorReply(e qmpError) map[string]any {
	return map[string]any{"error": map[string]string{"class": e.class, "desc": e.desc}}
}

// withID adds the command's id to its answer, as QEMU does.
func withID(reply map[string]any, id any) map[string]any {
	if id != nil {
		reply["id"] = id
	}
	return reply
}

func event(name string, data map[string]any) map[string]any {
	now := time.Now()
	return map[string]any{
		"event":     name,
		"data":      data,
		"timestamp": map[string]int64{"seconds": now.Unix(), "microseconds": int64(now.Nanosecond() / 1000)},
	}
}

func (q *QMP) device(id string) *device {
	for _, d := range q.devices {
		if d.id == id {
			return d
		}
	}
	return nil
}

func str(args map[string]any, k string) string {
	s, _ := args[k].(string)
	return s
}

// do carries out a command. Called with q.mu held.
func (q *QMP) do(req request, pending *[]*os.File) (ret any, events []any, qerr *qmpError) {
	args := req.Arguments
	generic := func(format string, a ...any) (any, []any, *qmpError) {
		return nil, nil, &qmpError{"GenericError", fmt.Sprintf(format, a...)}
	}
	switch req.Execute {
	case "qmp_capabilities":
		return map[string]any{}, nil, nil

	case "qom-list":
		switch str(args, "path") {
		case "/machine/peripheral-anon":
			return []any{}, nil, nil
		case "/machine/unattached":
			out := []any{map[string]string{"name": "device[0]", "type": "child<qemu64-x86_64-cpu>"}}
			for i := range q.bootNICs {
				out = append(out, map[string]string{"name": fmt.Sprintf("device[%d]", i+1), "type": "child<e1000>"})
			}
			return out, nil, nil
		}
		if str(args, "path") != "/machine/peripheral" {
			return nil, nil, &qmpError{"DeviceNotFound", fmt.Sprintf("Device '%s' not found", str(args, "path"))}
		}
		out := []map[string]string{{"name": "type", "type": "string"}}
		for _, d := range q.devices {
			out = append(out, map[string]string{"name": d.id, "type": "child<" + str(d.props, "driver") + ">"})
		}
		return out, nil, nil

	case "qom-get":
		var n int
		if _, err := fmt.Sscanf(str(args, "path"), "/machine/unattached/device[%d]", &n); err == nil && n <= len(q.bootNICs) {
			if n == 0 || str(args, "property") != "mac" {
				return nil, nil, &qmpError{"GenericError", fmt.Sprintf("Property '%s' not found", str(args, "property"))}
			}
			return q.bootNICs[n-1], nil, nil
		}
		id, ok := strings.CutPrefix(str(args, "path"), "/machine/peripheral/")
		d := q.device(id)
		if !ok || d == nil {
			return nil, nil, &qmpError{"DeviceNotFound", fmt.Sprintf("Device '%s' not found", str(args, "path"))}
		}
		p := str(args, "property")
		if v, ok := d.props[p]; ok {
			return v, nil, nil
		}
		switch p {
		case "mq":
			return false, nil, nil
		case "vectors":
			return 3, nil, nil
		case "csum", "guest_csum", "gso", "guest_tso4", "guest_tso6", "guest_ecn", "guest_ufo",
			"host_tso4", "host_tso6", "host_ecn", "host_ufo":
			return true, nil, nil
		}
		return generic("Property '%s.%s' not found", str(d.props, "driver"), p)

	case "getfd":
		name := str(args, "fdname")
		if len(*pending) == 0 {
			return generic("No file descriptor supplied via SCM_RIGHTS")
		}
		if old := q.fds[name]; old != nil {
			old.Close()
		}
		q.fds[name] = (*pending)[0]
		*pending = (*pending)[1:]
		return map[string]any{}, nil, nil

	case "closefd":
		name := str(args, "fdname")
		f := q.fds[name]
		if f == nil {
			return generic("File descriptor named '%s' not found", name)
		}
		f.Close()
		delete(q.fds, name)
		return map[string]any{}, nil, nil

	case "netdev_add":
		id := str(args, "id")
		if str(args, "type") != "tap" {
			return generic("the fake QEMU knows only tap netdevs")
		}
		if q.netdevs[id] != nil {
			return generic("Duplicate ID '%s' for netdev", id)
		}
		var names []string
		if s := str(args, "fds"); s != "" {
			names = strings.Split(s, ":")
		} else if s := str(args, "fd"); s != "" {
			names = []string{s}
		} else {
			return generic("the fake QEMU needs fd or fds")
		}
		nd := &netdev{id: id}
		for _, n := range names {
			f := q.fds[n]
			if f == nil {
				for _, f := range nd.files {
					f.Close()
				}
				return generic("File descriptor named '%s' not found", n)
			}
			// QEMU takes the named descriptor over.
			delete(q.fds, n)
			nd.files = append(nd.files, f)
		}
		q.netdevs[id] = nd
		return map[string]any{}, nil, nil

	case "netdev_del":
		id := str(args, "id")
		nd := q.netdevs[id]
		if nd == nil || nd.deleted {
			return nil, nil, &qmpError{"DeviceNotFound", fmt.Sprintf("Device '%s' not found", id)}
		}
		for _, d := range q.devices {
			if str(d.props, "netdev") == id {
				nd.deleted = true
				return map[string]any{}, nil, nil
			}
		}
		q.freeNetdev(id)
		return map[string]any{}, nil, nil

	case "query-pci":
		// Bus 0 with the root ports on it, each a bridge to its own bus
		// and what was plugged into it.
		var devs []any
		for i, rp := range q.rootPorts {
			var below []any
			for _, d := range q.devices {
				if str(d.props, "bus") == rp && !slices.Contains(q.unnumbered, rp) {
					below = append(below, map[string]any{"bus": i + 1, "slot": 0, "function": 0,
						"class_info": map[string]any{"class": 512, "desc": "Ethernet controller"}, "qdev_id": d.id})
				}
			}
			devs = append(devs, map[string]any{"bus": 0, "slot": 1, "function": i, "qdev_id": rp,
				"class_info": map[string]any{"class": 1540, "desc": "PCI bridge"},
				"pci_bridge": map[string]any{"bus": map[string]any{"number": i + 1}, "devices": nonNil(below)}})
		}
		return []any{map[string]any{"bus": 0, "devices": nonNil(devs)}}, nil, nil

	case "device_add":
		id := str(args, "id")
		if str(args, "driver") != "virtio-net-pci" {
			return generic("the fake QEMU knows only virtio-net-pci")
		}
		if id == "" {
			return generic("the fake QEMU wants device ids")
		}
		if q.device(id) != nil {
			return generic("Duplicate device ID '%s'", id)
		}
		if len(q.rootPorts) > 0 {
			bus := str(args, "bus")
			switch {
			case bus == "":
				return generic("Bus 'pcie.0' does not support hotplugging")
			case !slices.Contains(q.rootPorts, bus):
				return generic("Bus '%s' not found", bus)
			}
			for _, d := range q.devices {
				if str(d.props, "bus") == bus {
					return generic("PCI: slot 0 function 0 not available for virtio-net-pci, in use by %s", d.id)
				}
			}
		}
		nd := q.netdevs[str(args, "netdev")]
		inUse := false
		for _, d := range q.devices {
			inUse = inUse || str(d.props, "netdev") == str(args, "netdev")
		}
		if nd == nil || nd.deleted || inUse {
			return generic("Property 'virtio-net-pci.netdev' can't find value '%s'", str(args, "netdev"))
		}
		props := map[string]any{}
		for k, v := range args {
			props[k] = v
		}
		q.devices = append(q.devices, &device{id: id, props: props})
		return map[string]any{}, nil, nil

	case "device_del":
		id := str(args, "id")
		d := q.device(id)
		if d == nil {
			return nil, nil, &qmpError{"DeviceNotFound", fmt.Sprintf("Device '%s' not found", id)}
		}
		if !q.release {
			return map[string]any{}, nil, nil
		}
		q.devices = slices.DeleteFunc(q.devices, func(x *device) bool { return x == d })
		if nd := q.netdevs[str(d.props, "netdev")]; nd != nil && nd.deleted {
			q.freeNetdev(nd.id)
		}
		path := "/machine/peripheral/" + id
		return map[string]any{}, []any{
			event("DEVICE_DELETED", map[string]any{"path": path + "/virtio-backend"}),
			event("DEVICE_DELETED", map[string]any{"device": id, "path": path}),
		}, nil

	case "x-query-virtio-status":
		path := str(args, "path")
		id, _ := strings.CutPrefix(path, "/machine/peripheral/")
		id, _ = strings.CutSuffix(id, "/virtio-backend")
		if q.device(id) == nil {
			return generic("Path '%s' is not a VirtIODevice", path)
		}
		statuses := []string{}
		if q.driverOK {
			statuses = []string{
				"VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found",
				"VIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device",
				"VIRTIO_CONFIG_S_FEATURES_OK: Feature negotiation complete",
				"VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready",
			}
		}
		return map[string]any{"name": "virtio-net", "status": map[string]any{"statuses": statuses}}, nil, nil
	}
	return nil, nil, &qmpError{"CommandNotFound", fmt.Sprintf("The command %s has not been found", req.Execute)}
}

func (q *QMP) freeNetdev(id string) {
	for _, f := range q.netdevs[id].files {
		f.Close()
	}
	delete(q.netdevs, id)
}
