package vmctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds on QMP exchanges where the caller's context has no deadline: QEMU
// answers within milliseconds, but its QMP socket takes one client at a
// time and a second one waits silently.
const (
	connectTimeout = 10 * time.Second
	commandTimeout = 30 * time.Second
	// maxLine bounds one QMP message.
	maxLine = 4 << 20
)

// monitor is a QMP connection to one QEMU, used by one goroutine at a
// time. It is synchronous: a command is written, then messages are read
// until the answer carrying the command's id arrives, and the events read
// on the way are kept. (go-qemu's qmp.SocketMonitor, which the rest of the
// project uses in tests, hands out answers that alias its reader's buffer,
// and can pair an early event with qmp_capabilities and every later answer
// with the command before; see digitalocean/go-qemu#226 and #210.)
type monitor struct {
	socket  string
	conn    *net.UnixConn
	r       *bufio.Reader
	partial []byte // a message cut short by a deadline, continued by the next read
	nextID  int
	broken  error           // set once the connection is unusable
	deleted map[string]bool // device ids QEMU reported deleted
}

// QMPError is a command that QEMU refused or that did not complete.
type QMPError struct {
	Command string
	Socket  string
	// Class and Desc are QEMU's own words when it refused the command
	// (Class "GenericError", "DeviceNotFound", "CommandNotFound", ...);
	// otherwise Class is empty and Desc says what went wrong.
	Class string
	Desc  string
	// Gone says the connection ended: QEMU exited or closed it.
	Gone bool
	err  error
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("QMP %s on %s: %s", e.Command, e.Socket, e.Desc)
}

func (e *QMPError) Unwrap() error { return e.err }

// refused reports whether QEMU answered a command with an error, which
// means it did nothing. Other failures (no answer, a broken connection)
// leave it open whether the command took effect.
func refused(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe) && qe.Class != ""
}

// notFound reports whether QEMU refused a command because the thing it names
// does not exist (a device, a netdev, a named fd).
func notFound(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe) && (qe.Class == "DeviceNotFound" || qe.Class != "" && strings.Contains(qe.Desc, "not found"))
}

// commandNotFound reports whether QEMU does not know the command.
func commandNotFound(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe) && qe.Class == "CommandNotFound"
}

// qemuGone reports whether err says the QEMU behind a QMP socket has
// exited: it closed the connection, or nothing listens on its socket.
func qemuGone(err error) bool {
	var qe *QMPError
	return errors.As(err, &qe) && qe.Gone
}

// message is anything QEMU sends: its greeting, an event or an answer.
type message struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	ID     string          `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// dialQMP connects to the QMP socket of a QEMU and negotiates capabilities.
func dialQMP(ctx context.Context, socket string) (*monitor, error) {
	ctx, cancel := withTimeout(ctx, connectTimeout)
	defer cancel()
	fail := func(desc string, gone bool, err error) (*monitor, error) {
		return nil, &QMPError{Command: "connect", Socket: socket, Desc: desc, Gone: gone, err: err}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("no such socket (is the VM running, with -qmp unix:"+socket+",server=on,wait=off?)", true, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fail("nothing listens there (has the VM exited?)", true, err)
	case err != nil:
		return fail(err.Error(), false, err)
	}
	m := &monitor{socket: socket, conn: c.(*net.UnixConn), deleted: make(map[string]bool)}
	m.r = bufio.NewReader(m.conn)
	ok := false
	defer func() {
		if !ok {
			m.close()
		}
	}()
	dl, _ := ctx.Deadline()
	wait := time.Until(dl).Round(time.Millisecond)
	stop := m.bound(ctx)
	msg, err := m.read(ctx)
	stop()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fail(fmt.Sprintf("QEMU did not greet within %v (another QMP client holds the socket?)", wait), false, err)
		}
		return nil, m.failure("connect", err)
	}
	if msg.QMP == nil {
		return fail("not a QMP greeting: the socket is not QEMU's QMP monitor", false, nil)
	}
	if err := m.run(ctx, "qmp_capabilities", nil, nil, nil); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// close ends the connection.
func (m *monitor) close() {
	if m.broken == nil {
		m.broken = errors.New("connection closed")
	}
	m.conn.Close()
}

// closed reports whether the connection is unusable.
func (m *monitor) closed() bool { return m.broken != nil }

// bound makes reads and writes on the connection end with ctx; the
// returned function lifts that.
func (m *monitor) bound(ctx context.Context) (stop func()) {
	dl, _ := ctx.Deadline()
	m.conn.SetDeadline(dl)
	var (
		mu      sync.Mutex
		stopped bool
	)
	after := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			m.conn.SetDeadline(time.Unix(1, 0))
		}
	})
	return func() {
		after()
		// A cancellation that came too late must not cut short the
		// next exchange.
		mu.Lock()
		stopped = true
		mu.Unlock()
		m.conn.SetDeadline(time.Time{})
	}
}

// read reads one message. A message cut short by a deadline is continued
// by the next read, so a timed-out wait leaves the connection usable.
func (m *monitor) read(ctx context.Context) (*message, error) {
	for {
		line, err := m.r.ReadSlice('\n')
		if len(m.partial)+len(line) > maxLine {
			m.broken = errors.New("message too long")
			return nil, m.broken
		}
		m.partial = append(m.partial, line...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The connection's deadline is the context's, which
				// may not have noticed yet.
				if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
					return nil, context.DeadlineExceeded
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
			}
			return nil, err
		}
		line, m.partial = m.partial, nil
		var msg message
		if err := json.Unmarshal(line, &msg); err != nil {
			m.broken = fmt.Errorf("bad message from QEMU: %w", err)
			return nil, m.broken
		}
		if msg.Event == "DEVICE_DELETED" {
			// Also sent, without a device id, for a device's children.
			var d struct {
				Device string `json:"device"`
			}
			if json.Unmarshal(msg.Data, &d) == nil && d.Device != "" {
				m.deleted[d.Device] = true
			}
		}
		return &msg, nil
	}
}

// failure turns a failed read or write into a QMPError and, unless only
// the caller's context ended, marks the connection unusable.
func (m *monitor) failure(cmd string, err error) error {
	qe := &QMPError{Command: cmd, Socket: m.socket, Desc: err.Error(), err: err}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		qe.Desc = "no answer: " + err.Error()
		return qe
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		qe.Desc, qe.Gone = "QEMU closed the connection (has the VM exited?)", true
	case errors.Is(err, os.ErrDeadlineExceeded):
		qe.Desc = "no answer within " + commandTimeout.String()
	}
	if m.broken == nil || qe.Gone {
		m.broken = qe
	}
	m.conn.Close()
	return qe
}

// unusable says why the connection cannot carry cmd.
func (m *monitor) unusable(cmd string) error {
	if qe, ok := m.broken.(*QMPError); ok && qe.Gone {
		return &QMPError{Command: cmd, Socket: m.socket, Desc: qe.Desc, Gone: true}
	}
	return &QMPError{Command: cmd, Socket: m.socket, Desc: "connection unusable: " + m.broken.Error(), err: m.broken}
}

// run executes a QMP command with arguments args (nil for none) and, when
// out is not nil, decodes its return value into out. A file, when given,
// travels with the command (SCM_RIGHTS), as getfd wants. The exchange is
// bounded by ctx (or commandTimeout). A command cut short leaves it open
// whether QEMU carried it out; its late answer is recognised by its id and
// skipped.
func (m *monitor) run(ctx context.Context, cmd string, args any, file *os.File, out any) error {
	if m.broken != nil {
		return m.unusable(cmd)
	}
	m.nextID++
	id := "vmctl-" + strconv.Itoa(m.nextID)
	b, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{cmd, args, id})
	if err != nil {
		return &QMPError{Command: cmd, Socket: m.socket, Desc: err.Error(), err: err}
	}
	ctx, cancel := withTimeout(ctx, commandTimeout)
	defer cancel()
	stop := m.bound(ctx)
	defer stop()

	if file == nil {
		_, err = m.conn.Write(b)
	} else {
		rc, cerr := file.SyscallConn()
		if cerr != nil {
			return &QMPError{Command: cmd, Socket: m.socket, Desc: cerr.Error(), err: cerr}
		}
		cerr = rc.Control(func(fd uintptr) {
			_, _, err = m.conn.WriteMsgUnix(b, unix.UnixRights(int(fd)), nil)
		})
		if cerr != nil {
			return &QMPError{Command: cmd, Socket: m.socket, Desc: cerr.Error(), err: cerr}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		qe := m.failure(cmd, err)
		// A command half written has spoilt the stream.
		if m.broken == nil {
			m.broken = qe
			m.conn.Close()
		}
		return qe
	}
	for {
		msg, err := m.read(ctx)
		if err != nil {
			return m.failure(cmd, err)
		}
		if msg.Event != "" || (msg.Return == nil && msg.Error == nil) {
			continue
		}
		if msg.ID != id && msg.ID != "" {
			continue // the late answer to a command that timed out
		}
		if msg.Error != nil {
			return &QMPError{Command: cmd, Socket: m.socket, Class: msg.Error.Class, Desc: msg.Error.Desc}
		}
		if out != nil {
			if err := json.Unmarshal(msg.Return, out); err != nil {
				return &QMPError{Command: cmd, Socket: m.socket, Desc: "bad answer: " + err.Error(), err: err}
			}
		}
		return nil
	}
}

// waitDeleted waits for QEMU's DEVICE_DELETED event for device id: the guest
// has released the device and QEMU has removed it.
func (m *monitor) waitDeleted(ctx context.Context, id string) error {
	if m.deleted[id] {
		return nil
	}
	if m.broken != nil {
		return m.unusable("device_del")
	}
	stop := m.bound(ctx)
	defer stop()
	for !m.deleted[id] {
		if _, err := m.read(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return m.failure("device_del", err)
		}
	}
	return nil
}

// peripheral is a member of /machine/peripheral: a device added with an id.
type peripheral struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// peripherals lists the devices of the VM that have ids.
func (m *monitor) peripherals(ctx context.Context) ([]peripheral, error) {
	return m.qomList(ctx, "/machine/peripheral")
}

// qomList lists the members of a QOM container.
func (m *monitor) qomList(ctx context.Context, path string) ([]peripheral, error) {
	var out []peripheral
	err := m.run(ctx, "qom-list", map[string]any{"path": path}, nil, &out)
	return out, err
}

// qomGet reads a property of a QOM object.
func (m *monitor) qomGet(ctx context.Context, path, property string, out any) error {
	return m.run(ctx, "qom-get", map[string]any{"path": path, "property": property}, nil, out)
}

// withTimeout bounds ctx by d unless it has a deadline of its own.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
