package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds Boot's wait for the guest, and Run and WaitLease,
// when their context carries no deadline of its own.
const DefaultTimeout = 90 * time.Second

// KernelCmdline is the guest kernel's command line.
const KernelCmdline = "console=ttyS0 quiet panic=-1 rdinit=/init"

// Machine is the QEMU machine type guests run on. On i440fx ("pc") the PCI
// root bus takes hot-plugged devices through ACPI, so QMP device_add of a
// virtio-net-pci needs no bus argument and no pre-made ports.
const Machine = "pc"

// consoleLimit bounds the console log kept in memory.
const consoleLimit = 1 << 20

// BootOptions describes a guest to boot.
type BootOptions struct {
	Image Image
	// Name names the guest in QEMU and in socket file names ("guest" when
	// empty).
	Name string
	// MemoryMB is the guest's memory (256 when 0).
	MemoryMB int
	// Dir holds the QMP socket. When empty a temporary directory is made
	// and removed by Close. Unix socket paths must stay under 108 bytes.
	Dir string
	// ExtraArgs are appended to QEMU's command line, for example
	// -netdev/-device pairs for NICs present at boot.
	ExtraArgs []string
	// Logf, when set, receives the QEMU command line, the console's lines
	// (except command output, which Run returns) and QEMU's messages. It is
	// not called after Close returns.
	Logf func(format string, args ...any)
}

// VM is a running QEMU guest booted from an Image.
type VM struct {
	// QMPSocket is the path of QEMU's QMP socket (a unix socket server
	// that takes one client at a time).
	QMPSocket string
	// Name is the guest's name.
	Name string

	cmd     *exec.Cmd
	stdin   *os.File
	dir     string
	ownDir  bool
	logf    func(format string, args ...any)
	done    chan struct{} // closed when QEMU has exited
	readers sync.WaitGroup
	waitErr error

	wmu sync.Mutex // serialises writes to the console

	mu      sync.Mutex
	console strings.Builder
	ready   chan struct{}
	isReady bool
	nextID  int
	runs    map[string]*pendingRun
	leases  map[string]lease
	nics    map[string]string // ifname -> MAC, from XS-NIC
	changed chan struct{}     // closed and replaced when a lease or NIC is reported

	closeOnce sync.Once
	closeErr  error
}

// lease is a DHCP lease the guest reported.
type lease struct {
	IP, Router, MAC string
}

type pendingRun struct {
	out    strings.Builder
	result chan int
}

// Boot starts QEMU on opts.Image and waits until the guest's command
// channel is up (XS-READY), bounded by ctx or DefaultTimeout. ctx only
// bounds the boot: the guest runs until Close or Kill.
func Boot(ctx context.Context, opts BootOptions) (*VM, error) {
	if opts.Image.Kernel == "" || opts.Image.Initrd == "" {
		return nil, errors.New("guest: boot: no image")
	}
	name := opts.Name
	if name == "" {
		name = "guest"
	}
	if strings.ContainsAny(name, "/,= \t\n") {
		return nil, fmt.Errorf("guest: boot: bad name %q", name)
	}
	mem := opts.MemoryMB
	if mem == 0 {
		mem = 256
	}
	vm := &VM{
		Name:    name,
		logf:    opts.Logf,
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
		runs:    make(map[string]*pendingRun),
		leases:  make(map[string]lease),
		nics:    make(map[string]string),
		changed: make(chan struct{}),
	}
	vm.dir = opts.Dir
	if vm.dir != "" {
		if len(filepath.Join(vm.dir, name+".qmp")) >= 108 {
			return nil, fmt.Errorf("guest: boot: socket path %s is too long for a unix socket", filepath.Join(vm.dir, name+".qmp"))
		}
		if err := os.MkdirAll(vm.dir, 0o755); err != nil {
			return nil, err
		}
	} else {
		d, err := os.MkdirTemp("", "xsguest-")
		if err != nil {
			return nil, err
		}
		vm.dir, vm.ownDir = d, true
	}
	vm.QMPSocket = filepath.Join(vm.dir, name+".qmp")
	if len(vm.QMPSocket) >= 108 {
		vm.cleanupFiles()
		return nil, fmt.Errorf("guest: boot: socket path %s is too long for a unix socket", vm.QMPSocket)
	}
	os.Remove(vm.QMPSocket)

	args := []string{
		"-name", name,
		"-machine", Machine, "-accel", "tcg",
		"-smp", "1", "-m", strconv.Itoa(mem),
		"-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
		"-kernel", opts.Image.Kernel,
		"-initrd", opts.Image.Initrd,
		"-append", KernelCmdline,
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
		"-qmp", "unix:" + vm.QMPSocket + ",server=on,wait=off",
	}
	args = append(args, opts.ExtraArgs...)

	inR, inW, err := os.Pipe()
	if err != nil {
		vm.cleanupFiles()
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		vm.cleanupFiles()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		vm.cleanupFiles()
		return nil, err
	}
	vm.cmd = exec.Command("qemu-system-x86_64", args...)
	vm.cmd.Stdin, vm.cmd.Stdout, vm.cmd.Stderr = inR, outW, errW
	// QEMU dies with the process that started it (a test binary killed by
	// its timeout leaves no guest behind).
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	vm.debugf("qemu-system-x86_64 %s", strings.Join(args, " "))
	err = vm.cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		vm.cleanupFiles()
		return nil, fmt.Errorf("guest: boot: %w", err)
	}
	vm.stdin = inW
	vm.readers.Add(2)
	go vm.readConsole(outR)
	go vm.readStderr(errR)
	go func() {
		vm.waitErr = vm.cmd.Wait()
		close(vm.done)
	}()

	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	select {
	case <-vm.ready:
		return vm, nil
	case <-vm.done:
		vm.Close()
		return nil, fmt.Errorf("guest: boot %s: qemu exited (%v) before the guest was ready; console:\n%s", name, vm.waitErr, vm.Console())
	case <-ctx.Done():
		vm.Close()
		return nil, fmt.Errorf("guest: boot %s: guest not ready: %w; console:\n%s", name, ctx.Err(), vm.Console())
	}
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

func (vm *VM) debugf(format string, args ...any) {
	if vm.logf != nil {
		vm.logf("%s: "+format, append([]any{vm.Name}, args...)...)
	}
}

// appendConsole keeps a line in the console log. Called with vm.mu held.
func (vm *VM) appendConsole(line string) {
	if vm.console.Len()+len(line) > consoleLimit {
		old := vm.console.String()
		vm.console.Reset()
		vm.console.WriteString("[... console log truncated ...]\n")
		vm.console.WriteString(old[len(old)/2:])
	}
	vm.console.WriteString(line)
	vm.console.WriteByte('\n')
}

func (vm *VM) readStderr(r *os.File) {
	defer vm.readers.Done()
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := "qemu: " + sc.Text()
		vm.mu.Lock()
		vm.appendConsole(line)
		vm.mu.Unlock()
		vm.debugf("%s", line)
	}
}

func (vm *VM) readConsole(r *os.File) {
	defer vm.readers.Done()
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(line, "\r\n")
			vm.handleLine(line)
		}
		if err != nil {
			return
		}
	}
}

// handleLine records a console line and acts on the protocol's messages.
func (vm *VM) handleLine(line string) {
	// Command output goes to Run's caller, not to the log.
	if !strings.HasPrefix(line, "XS-OUT ") {
		vm.debugf("console: %s", line)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.appendConsole(line)
	// A kernel message can land in front of ours on the same line.
	i := strings.Index(line, "XS-")
	if i < 0 {
		return
	}
	msg := line[i:]
	switch {
	case msg == "XS-READY":
		if !vm.isReady {
			vm.isReady = true
			close(vm.ready)
		}
	case strings.HasPrefix(msg, "XS-OUT "):
		id, text, _ := strings.Cut(msg[len("XS-OUT "):], " ")
		if p := vm.runs[id]; p != nil {
			p.out.WriteString(text)
			p.out.WriteByte('\n')
		}
	case strings.HasPrefix(msg, "XS-DONE "):
		f := strings.Fields(msg)
		if len(f) != 3 {
			return
		}
		st, err := strconv.Atoi(f[2])
		if err != nil {
			return
		}
		if p := vm.runs[f[1]]; p != nil {
			p.result <- st
			delete(vm.runs, f[1])
		}
	case strings.HasPrefix(msg, "XS-NIC "):
		f := strings.Fields(msg)
		if len(f) != 3 {
			return
		}
		vm.nics[f[1]] = f[2]
		close(vm.changed)
		vm.changed = make(chan struct{})
	case strings.HasPrefix(msg, "XS-LEASE "):
		f := strings.Fields(msg)
		if len(f) != 5 {
			return
		}
		vm.leases[f[1]] = lease{IP: f[2], Router: f[3], MAC: f[4]}
		close(vm.changed)
		vm.changed = make(chan struct{})
	}
}

// Console returns everything the guest printed on its serial console so
// far, and QEMU's own messages (prefixed "qemu: "), for failure messages.
func (vm *VM) Console() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.console.String()
}

// Run runs cmd with sh in the guest and returns its combined output and
// exit status. The command gets no input; a missing newline at the end of
// its output is added. A cancelled ctx (or DefaultTimeout when ctx has no
// deadline) ends the wait, not the command. Commands run concurrently.
func (vm *VM) Run(ctx context.Context, cmd string) (output string, exit int, err error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return "", -1, errors.New("guest: run: command must be one line")
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()

	vm.mu.Lock()
	vm.nextID++
	id := strconv.Itoa(vm.nextID)
	p := &pendingRun{result: make(chan int, 1)}
	vm.runs[id] = p
	vm.mu.Unlock()
	forget := func() {
		vm.mu.Lock()
		delete(vm.runs, id)
		vm.mu.Unlock()
	}

	if err := vm.send(ctx, "XS-RUN "+id+" "+cmd+"\n"); err != nil {
		forget()
		return "", -1, fmt.Errorf("guest: run %q: %w", cmd, err)
	}
	select {
	case st := <-p.result:
		vm.mu.Lock()
		out := p.out.String()
		vm.mu.Unlock()
		return out, st, nil
	case <-vm.done:
		forget()
		return "", -1, fmt.Errorf("guest: run %q: qemu exited", cmd)
	case <-ctx.Done():
		forget()
		return "", -1, fmt.Errorf("guest: run %q: %w", cmd, ctx.Err())
	}
}

// send writes to the guest's console, bounded by ctx.
func (vm *VM) send(ctx context.Context, s string) error {
	vm.wmu.Lock()
	defer vm.wmu.Unlock()
	select {
	case <-vm.done:
		return errors.New("qemu exited")
	default:
	}
	if dl, ok := ctx.Deadline(); ok {
		vm.stdin.SetWriteDeadline(dl)
	} else {
		vm.stdin.SetWriteDeadline(time.Time{})
	}
	_, err := io.WriteString(vm.stdin, s)
	return err
}

// WaitLease waits until the guest reports a DHCP lease on ifname and
// returns it; a lease reported before the call counts. router is "-" when
// the server named none.
func (vm *VM) WaitLease(ctx context.Context, ifname string) (ip, router, mac string, err error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	for {
		vm.mu.Lock()
		l, ok := vm.leases[ifname]
		changed := vm.changed
		vm.mu.Unlock()
		if ok {
			return l.IP, l.Router, l.MAC, nil
		}
		select {
		case <-changed:
		case <-vm.done:
			return "", "", "", fmt.Errorf("guest: no lease on %s: qemu exited", ifname)
		case <-ctx.Done():
			return "", "", "", fmt.Errorf("guest: no lease on %s: %w", ifname, ctx.Err())
		}
	}
}

// WaitNIC waits until the guest has brought up a NIC named ifname (at
// boot or hot-plugged) and returns its MAC address; one seen before the
// call counts. A QMP device_add whose NIC never shows up here was lost.
func (vm *VM) WaitNIC(ctx context.Context, ifname string) (mac string, err error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	for {
		vm.mu.Lock()
		m, ok := vm.nics[ifname]
		changed := vm.changed
		vm.mu.Unlock()
		if ok {
			return m, nil
		}
		select {
		case <-changed:
		case <-vm.done:
			return "", fmt.Errorf("guest: no NIC %s: qemu exited", ifname)
		case <-ctx.Done():
			return "", fmt.Errorf("guest: no NIC %s: %w", ifname, ctx.Err())
		}
	}
}

// PID returns the QEMU process's id.
func (vm *VM) PID() int {
	return vm.cmd.Process.Pid
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} {
	return vm.done
}

// Kill sends SIGKILL to this VM's QEMU process (and no other) and returns
// without waiting. Killing a QEMU that has already exited is no error.
func (vm *VM) Kill() error {
	select {
	case <-vm.done:
		return nil
	default:
	}
	// os.Process signals through a pidfd: never another process that
	// reused the id.
	if err := vm.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("guest: kill %s (pid %d): %w", vm.Name, vm.PID(), err)
	}
	return nil
}

// Close stops the guest: QMP quit, else SIGTERM, else SIGKILL, each with a
// bounded wait; then it waits for QEMU and removes the socket (and Dir when
// Boot made it). Safe to call more than once.
func (vm *VM) Close() error {
	vm.closeOnce.Do(func() { vm.closeErr = vm.close() })
	return vm.closeErr
}

func (vm *VM) close() error {
	var err error
	exited := func(d time.Duration) bool {
		select {
		case <-vm.done:
			return true
		case <-time.After(d):
			return false
		}
	}
	if !exited(0) {
		if qerr := qmpQuit(vm.QMPSocket, 2*time.Second); qerr != nil {
			vm.debugf("qmp quit: %v", qerr)
		}
		if !exited(5 * time.Second) {
			vm.cmd.Process.Signal(syscall.SIGTERM)
			if !exited(5 * time.Second) {
				vm.cmd.Process.Signal(syscall.SIGKILL)
				if !exited(10 * time.Second) {
					err = fmt.Errorf("guest: %s (pid %d) does not exit", vm.Name, vm.PID())
				}
			}
		}
	}
	vm.stdin.Close()
	if err == nil {
		vm.readers.Wait()
	}
	vm.cleanupFiles()
	return err
}

func (vm *VM) cleanupFiles() {
	if vm.QMPSocket != "" {
		os.Remove(vm.QMPSocket)
	}
	if vm.ownDir {
		os.RemoveAll(vm.dir)
	}
}

// qmpQuit asks QEMU to quit over QMP, bounded by timeout (the socket takes
// one client at a time; another one may hold it).
func qmpQuit(path string, timeout time.Duration) error {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	dec := json.NewDecoder(c)
	var msg map[string]json.RawMessage
	if err := dec.Decode(&msg); err != nil { // greeting
		return err
	}
	for _, cmd := range []string{"qmp_capabilities", "quit"} {
		if _, err := fmt.Fprintf(c, `{"execute":%q}`+"\n", cmd); err != nil {
			return err
		}
		for {
			msg = nil
			if err := dec.Decode(&msg); err != nil {
				if cmd == "quit" && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
					return nil
				}
				return err
			}
			if _, ok := msg["event"]; ok {
				continue
			}
			if e, ok := msg["error"]; ok {
				return fmt.Errorf("qmp %s: %s", cmd, e)
			}
			break
		}
	}
	return nil
}
