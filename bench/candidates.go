package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xdpswitch/xdpswitch/api"
)

// Candidate is one way of switching between the ports of a Topo.
type Candidate interface {
	// Name is the candidate's name in tables and plots.
	Name() string
	// Direct is true for the generator alone: no switch in between.
	Direct() bool
	// Start plugs the switch into t's ports. Everything it makes is
	// undone by cl.
	Start(ctx context.Context, t *Topo, env *Env, cl *Cleanup) (*Running, error)
}

// Running is a started candidate.
type Running struct {
	// PID is the switch's process (0 for the kernel's own switching).
	PID int
	// Drops returns the drops the switch itself reports, cumulative.
	Drops func(ctx context.Context) (uint64, error)
	// Detail returns candidate-specific facts for the report (FDB size,
	// UMEM, ...).
	Detail func(ctx context.Context) map[string]string
}

// ErrUnsupported marks a scenario a candidate cannot run; the reason is in
// the wrapped message.
var ErrUnsupported = errors.New("not supported")

// Env is what candidates share: a temp dir, the daemon binary and the CPU
// the switch is pinned to.
type Env struct {
	TempDir string
	// Daemon is the built xdpswitchd.
	Daemon string
	// SwitchCPU is the CPU userspace switches are pinned to (-1: none).
	SwitchCPU int
	// OVSPMDSleep, when positive, turns on OVS's PMD load-based sleeping
	// (other_config:pmd-maxsleep, microseconds).
	OVSPMDSleep int
	// DaemonFillFrames, when positive, replaces the config's fill_frames
	// (128): frames each port holds for receiving.
	DaemonFillFrames int
	// Log receives progress lines.
	Log func(format string, args ...any)
}

func (e *Env) logf(format string, args ...any) {
	if e.Log != nil {
		e.Log(format, args...)
	}
}

func (e *Env) taskset() []string {
	if e.SwitchCPU < 0 {
		return nil
	}
	return []string{"taskset", "-c", strconv.Itoa(e.SwitchCPU)}
}

// --- the generator alone ---------------------------------------------------

// GenAlone joins generator and sink with one veth pair: the set-up's limit.
type GenAlone struct{}

func (GenAlone) Name() string { return "generator-alone" }
func (GenAlone) Direct() bool { return true }
func (GenAlone) Start(ctx context.Context, t *Topo, env *Env, cl *Cleanup) (*Running, error) {
	if t.Mode != ModePlain || t.FDB > 1 || t.PortCount > 2 {
		return nil, fmt.Errorf("%w: the generator alone has no switch to scale", ErrUnsupported)
	}
	return &Running{Drops: func(context.Context) (uint64, error) { return 0, nil }}, nil
}

// --- Linux bridge ----------------------------------------------------------

// Bridge is the kernel's bridge with every port enslaved (and for VXLAN a
// vxlan device over the uplink). br_netfilter is told to keep out of
// bridged traffic, as a tuned host would.
type Bridge struct{}

func (Bridge) Name() string { return "linux-bridge" }
func (Bridge) Direct() bool { return false }
func (Bridge) Start(ctx context.Context, t *Topo, env *Env, cl *Cleanup) (*Running, error) {
	sw := t.Sw
	cmds := [][]string{
		{"ip", "link", "add", "br0", "type", "bridge", "stp_state", "0"},
		{"ip", "link", "set", "br0", "up"},
	}
	for _, p := range t.Ports {
		cmds = append(cmds, []string{"ip", "link", "set", p, "master", "br0"})
	}
	if t.Uplink != "" {
		cmds = append(cmds,
			[]string{"ip", "link", "add", "vx0", "type", "vxlan", "id", strconv.Itoa(benchVNI),
				"local", localVTEP.String(), "remote", remoteVTEP.String(), "dstport", strconv.Itoa(vxlanPort),
				"dev", t.Uplink, "udpcsum"},
			[]string{"ip", "link", "set", "vx0", "mtu", "1500"},
			[]string{"ip", "link", "set", "vx0", "master", "br0"},
			[]string{"ip", "link", "set", "vx0", "up"},
		)
	}
	for _, c := range cmds {
		if _, err := sw.Run(ctx, c...); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"call-iptables", "call-ip6tables", "call-arptables"} {
		_, _ = sw.Run(ctx, "sysctl", "-qw", "net.bridge.bridge-nf-"+k+"=0")
	}
	devs := []nsDev{{sw, "br0"}}
	if t.Uplink != "" {
		devs = append(devs, nsDev{sw, "vx0"})
	}
	return &Running{
		Drops: func(ctx context.Context) (uint64, error) { return deviceDrops(ctx, devs) },
		Detail: func(ctx context.Context) map[string]string {
			out, err := sw.Run(ctx, "bridge", "fdb", "show", "br", "br0", "dynamic")
			if err != nil {
				return nil
			}
			return map[string]string{"fdb_entries": strconv.Itoa(countLines(out, "master br0"))}
		},
	}, nil
}

func countLines(s, substr string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// --- XDP devmap redirect ---------------------------------------------------

// DevmapRedirect is an XDP program on port A that redirects every frame to
// port B through a DEVMAP: no learning, no lookup, the upper bound for
// anything built on XDP.
type DevmapRedirect struct{}

func (DevmapRedirect) Name() string { return "xdp-devmap" }
func (DevmapRedirect) Direct() bool { return false }
func (DevmapRedirect) Start(ctx context.Context, t *Topo, env *Env, cl *Cleanup) (*Running, error) {
	if t.Mode != ModePlain {
		return nil, fmt.Errorf("%w: a devmap redirect has no tunnel", ErrUnsupported)
	}
	if t.FDB > 1 {
		return nil, fmt.Errorf("%w: a devmap redirect has no FDB", ErrUnsupported)
	}
	d, err := NewDevmap()
	if err != nil {
		return nil, err
	}
	cl.Push("devmap", d.Close)
	// The sink's device already runs an XDP program, which a veth needs
	// before it accepts redirected frames.
	if err := d.Wire(t.Sw, swA, swB, cl); err != nil {
		return nil, err
	}
	return &Running{Drops: func(context.Context) (uint64, error) { return 0, nil }}, nil
}

// --- processes -------------------------------------------------------------

// proc is a child process the benchmark started, ended by its PID.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
	err  error
}

// spawner forks every long-lived child from one locked OS thread that
// never exits (threads that ran in another namespace are discarded, and a
// child started from one would get its parent-death signal then).
var spawner = func() chan func() {
	c := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range c {
			f()
		}
	}()
	return c
}()

func spawn(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	spawner <- func() { errc <- cmd.Start() }
	return <-errc
}

// startProc starts args with output to logPath and pushes its end: SIGTERM,
// then SIGKILL after a grace period.
func startProc(cl *Cleanup, logPath string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	// The parent-death signal fires when the forking thread exits, so the
	// fork happens on a thread that lives as long as the harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	cl.Push(fmt.Sprintf("process %d (%s)", cmd.Process.Pid, filepath.Base(args[len(args)-1])), func() error {
		return p.stop(10 * time.Second)
	})
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("process %d does not exit", p.pid())
	}
	return fmt.Errorf("process %d ignored SIGTERM for %v and was killed", p.pid(), grace)
}

// tail returns the last lines of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitLog waits until the log holds want, the process exits or the time is
// up.
func (p *proc) waitLog(ctx context.Context, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(p.log)
		if strings.Contains(string(b), want) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("exited (%v) before %q:\n%s", p.err, want, p.tail(15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q after %v:\n%s", want, timeout, p.tail(15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// --- xdpswitchd -------------------------------------------------------------

// Daemon is xdpswitchd run by hand in the switch namespace, with one
// network holding the switch-side ports.
type Daemon struct{}

func (Daemon) Name() string { return "xdpswitchd" }
func (Daemon) Direct() bool { return false }

// daemonFrames and daemonFillFrames are the config's defaults, written out
// so that the report can give the UMEM size.
const (
	daemonFrames     = 16384
	daemonFrameSize  = 2048
	daemonFillFrames = 128
)

// DaemonConfig is the config the benchmark gives xdpswitchd.
func DaemonConfig(t *Topo, dir string, fillFrames int) string {
	if fillFrames <= 0 {
		fillFrames = daemonFillFrames
	}
	var b strings.Builder
	fmt.Fprintf(&b, "run_dir: %s\nstate_dir: %s\napi_socket: %s\nlog_level: info\n",
		filepath.Join(dir, "run"), filepath.Join(dir, "state"), filepath.Join(dir, "run", "api.sock"))
	fmt.Fprintf(&b, "queues: 1\nframes: %d\nframe_size: %d\nfill_frames: %d\n", daemonFrames, daemonFrameSize, fillFrames)
	fmt.Fprintf(&b, "fdb:\n  max_entries: %d\n", max(65536, 4*t.FDB))
	if t.Uplink != "" {
		fmt.Fprintf(&b, "uplink:\n  device: %s\n  address: %s\n", t.Uplink, localVTEP)
	}
	fmt.Fprintf(&b, "networks:\n  - name: bench\n    ports: [%s]\n", strings.Join(t.Ports, ", "))
	if t.Uplink != "" {
		fmt.Fprintf(&b, "    vxlan:\n      vni: %d\n      remotes: [%s]\n", benchVNI, remoteVTEP)
	}
	if t.Rules > 0 {
		b.WriteString("    rules:\n      default: allow\n      rules:\n")
		for _, l := range ruleLines(t.Rules) {
			fmt.Fprintf(&b, "        - %s\n", l)
		}
	}
	return b.String()
}

// CheckDaemonVXLAN tells whether the daemon's config knows the uplink
// and VXLAN keys, by asking xdpswitchd --check-config.
func CheckDaemonVXLAN(ctx context.Context, bin, dir string) error {
	t := &Topo{Scenario: Scenario{Mode: ModeEncap}, Ports: []string{swA}, Uplink: uplinkDev}
	path := filepath.Join(dir, "vxlan-check.yaml")
	if err := os.WriteFile(path, []byte(DaemonConfig(t, dir, 0)), 0o644); err != nil {
		return err
	}
	out, err := run(ctx, bin, "--check-config", path)
	if err != nil {
		return fmt.Errorf("%w: the daemon's config lacks `uplink`/`vxlan`: %s", ErrUnsupported, firstLine(out))
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func (Daemon) Start(ctx context.Context, t *Topo, env *Env, cl *Cleanup) (*Running, error) {
	dir, err := os.MkdirTemp(env.TempDir, "xdpswitchd-")
	if err != nil {
		return nil, err
	}
	cl.Push("daemon dir", func() error { return os.RemoveAll(dir) })
	if t.Uplink != "" {
		if err := CheckDaemonVXLAN(ctx, env.Daemon, dir); err != nil {
			return nil, err
		}
	}
	cfgPath := filepath.Join(dir, "xdpswitch.yaml")
	if err := os.WriteFile(cfgPath, []byte(DaemonConfig(t, dir, env.DaemonFillFrames)), 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"ip", "netns", "exec", t.Sw.Name}, env.taskset()...)
	args = append(args, env.Daemon, "--config", cfgPath)
	p, err := startProc(cl, filepath.Join(dir, "xdpswitchd.log"), args...)
	if err != nil {
		return nil, err
	}
	if err := p.waitLog(ctx, "xdpswitchd ready", 60*time.Second); err != nil {
		return nil, fmt.Errorf("xdpswitchd: %w", err)
	}
	client := api.NewClient(filepath.Join(dir, "run", "api.sock"))
	stats := func(ctx context.Context) (api.Stats, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return client.Stats(ctx)
	}
	return &Running{
		PID: p.pid(),
		Drops: func(ctx context.Context) (uint64, error) {
			s, err := stats(ctx)
			if err != nil {
				return 0, err
			}
			var sum uint64
			for _, port := range s.Ports {
				for _, n := range port.Counters.Drops {
					sum += n
				}
				sum += port.Counters.TxErrors
			}
			return sum, nil
		},
		Detail: func(ctx context.Context) map[string]string {
			d := map[string]string{
				"umem_bytes": strconv.Itoa(daemonFrames * daemonFrameSize),
			}
			if s, err := stats(ctx); err == nil {
				entries := 0
				var sockDrop, ringFull, fillEmpty uint64
				for _, n := range s.Networks {
					entries += n.FDB.Entries
				}
				for _, port := range s.Ports {
					sockDrop += port.Counters.SocketRxDropped
					ringFull += port.Counters.SocketRxRingFull
					fillEmpty += port.Counters.SocketFillRingEmpty
				}
				d["socket_rx_ring_full"] = strconv.FormatUint(ringFull, 10)
				d["socket_fill_ring_empty"] = strconv.FormatUint(fillEmpty, 10)
				d["fdb_entries"] = strconv.Itoa(entries)
				d["socket_rx_dropped"] = strconv.FormatUint(sockDrop, 10)
				d["ports"] = strconv.Itoa(len(s.Ports))
			}
			return d
		},
	}, nil
}

// --- Open vSwitch, userspace datapath with afxdp ports ------------------------

// OVS is Debian's Open vSwitch run by hand in the switch namespace:
// ovsdb-server and ovs-vswitchd with their own database and run
// directory, a bridge with datapath_type=netdev and the ports as
// type=afxdp, switching with the default NORMAL (learning) action.
type OVS struct{}

func (OVS) Name() string { return "ovs-afxdp" }
func (OVS) Direct() bool { return false }

// OVSAvailable reports why OVS cannot run here, or nil.
func OVSAvailable() error {
	for _, bin := range []string{"ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovsdb-tool"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w: %s not installed (Debian package openvswitch-switch)", ErrUnsupported, bin)
		}
	}
	if _, err := os.Stat(ovsSchema); err != nil {
		return fmt.Errorf("%w: %s missing", ErrUnsupported, ovsSchema)
	}
	return nil
}

const ovsSchema = "/usr/share/openvswitch/vswitch.ovsschema"

func (OVS) Start(ctx context.Context, t *Topo, env *Env, cl *Cleanup) (*Running, error) {
	if err := OVSAvailable(); err != nil {
		return nil, err
	}
	if t.Mode != ModePlain {
		return nil, fmt.Errorf("%w: the benchmark does not set up OVS tunnels", ErrUnsupported)
	}
	dir, err := os.MkdirTemp(env.TempDir, "ovs-")
	if err != nil {
		return nil, err
	}
	cl.Push("ovs dir", func() error { return os.RemoveAll(dir) })
	db := filepath.Join(dir, "conf.db")
	sock := "unix:" + filepath.Join(dir, "db.sock")
	if _, err := run(ctx, "ovsdb-tool", "create", db, ovsSchema); err != nil {
		return nil, err
	}
	ns := []string{"ip", "netns", "exec", t.Sw.Name}
	envv := []string{"env", "OVS_RUNDIR=" + dir, "OVS_LOGDIR=" + dir, "OVS_DBDIR=" + dir}
	dbp, err := startProc(cl, filepath.Join(dir, "ovsdb-server.out"), append(append(ns, envv...),
		"ovsdb-server", db, "--remote=p"+sock, "--pidfile="+filepath.Join(dir, "ovsdb-server.pid"),
		"--unixctl="+filepath.Join(dir, "ovsdb-server.ctl"), "--log-file="+filepath.Join(dir, "ovsdb-server.log"))...)
	if err != nil {
		return nil, err
	}
	vsctl := func(args ...string) (string, error) {
		return t.Sw.Run(ctx, append([]string{"ovs-vsctl", "--db=" + sock, "--timeout=20"}, args...)...)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := t.Sw.Run(ctx, "ovs-vsctl", "--db="+sock, "--no-wait", "--timeout=2", "init")
		if err == nil {
			break
		}
		if dbp.exited() || time.Now().After(deadline) {
			return nil, fmt.Errorf("ovsdb-server: %v\n%s", err, dbp.tail(10))
		}
		time.Sleep(100 * time.Millisecond)
	}
	oc := []string{"set", "Open_vSwitch", ".", "other_config:pmd-cpu-mask=0x" + strconv.FormatInt(1<<max(env.SwitchCPU, 0), 16)}
	if env.OVSPMDSleep > 0 {
		oc = append(oc, "other_config:pmd-maxsleep="+strconv.Itoa(env.OVSPMDSleep))
	}
	if _, err := t.Sw.Run(ctx, append([]string{"ovs-vsctl", "--db=" + sock, "--no-wait"}, oc...)...); err != nil {
		return nil, err
	}
	args := append(append(append([]string{}, ns...), envv...), env.taskset()...)
	args = append(args, "ovs-vswitchd", sock, "--pidfile="+filepath.Join(dir, "ovs-vswitchd.pid"),
		"--unixctl="+filepath.Join(dir, "ovs-vswitchd.ctl"), "--log-file="+filepath.Join(dir, "ovs-vswitchd.log"))
	vs, err := startProc(cl, filepath.Join(dir, "ovs-vswitchd.out"), args...)
	if err != nil {
		return nil, err
	}
	add := []string{"add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
		"other_config:mac-table-size=" + strconv.Itoa(max(8192, 4*t.FDB))}
	for _, p := range t.Ports {
		add = append(add, "--", "add-port", "br0", p, "--", "set", "interface", p, "type=afxdp", "options:xdp-mode=native")
	}
	// --no-wait: with many ports, ovs-vswitchd takes longer to set them
	// all up than ovs-vsctl would wait; the loop below waits instead.
	if _, err := t.Sw.Run(ctx, append([]string{"ovs-vsctl", "--db=" + sock, "--no-wait", "--timeout=20"}, add...)...); err != nil {
		return nil, fmt.Errorf("ovs add-br with %d ports: %v\n%s", len(t.Ports), firstLine(err.Error()), vs.tail(10))
	}
	// Wait until every port has its XDP program and sockets, or says why
	// not.
	deadline = time.Now().Add(60*time.Second + 2*time.Second*time.Duration(len(t.Ports)))
	for _, p := range t.Ports {
		for {
			ofport, err := vsctl("get", "interface", p, "ofport")
			if err == nil && strings.TrimSpace(ofport) != "[]" && strings.TrimSpace(ofport) != "-1" {
				break
			}
			if e, _ := vsctl("get", "interface", p, "error"); strings.TrimSpace(e) != "[]" && strings.TrimSpace(e) != "" {
				return nil, fmt.Errorf("ovs port %s: %s", p, strings.TrimSpace(e))
			}
			if vs.exited() || time.Now().After(deadline) {
				return nil, fmt.Errorf("ovs port %s not ready (ofport %q, %v)\n%s", p, strings.TrimSpace(ofport), err, vs.tail(10))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if out, err := t.Sw.Run(ctx, "ip", "link", "show", swA); err != nil || !strings.Contains(out, "xdp") {
		return nil, fmt.Errorf("ovs: no XDP program on %s:\n%s", swA, vs.tail(10))
	}
	return &Running{
		PID: vs.pid(),
		// ovs-vsctl's statistics column is refreshed only every few
		// seconds, so the live port counters come from ovs-ofctl. Only
		// the transmit drops are OVS's own: its receive drops are the
		// kernel device's, already counted with the path's devices.
		Drops: func(ctx context.Context) (uint64, error) {
			out, err := t.Sw.Run(ctx, "ovs-ofctl", "dump-ports", "unix:"+filepath.Join(dir, "br0.mgmt"))
			if err != nil {
				return 0, err
			}
			return ofctlTxDrops(out), nil
		},
		Detail: func(ctx context.Context) map[string]string {
			d := map[string]string{}
			out, err := t.Sw.Run(ctx, "ovs-appctl", "-t", filepath.Join(dir, "ovs-vswitchd.ctl"), "fdb/show", "br0")
			if err == nil {
				d["fdb_entries"] = strconv.Itoa(max(0, len(strings.Split(strings.TrimSpace(out), "\n"))-1))
			}
			return d
		},
	}, nil
}

// ofctlTxDrops sums the drop= and errs= of every port's "tx" line in
// ovs-ofctl dump-ports output.
func ofctlTxDrops(out string) uint64 {
	var sum uint64
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "tx ") {
			continue
		}
		for _, f := range strings.Split(line[3:], ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
			if ok && (k == "drop" || k == "errs") {
				if n, err := strconv.ParseUint(v, 10, 64); err == nil {
					sum += n
				}
			}
		}
	}
	return sum
}
