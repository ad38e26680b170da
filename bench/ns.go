package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xdpswitch/xdpswitch/internal/inns"
)

// nsPrefix starts the name of every namespace the benchmark makes, followed
// by the harness's PID, so that a later run can tell which leftovers belong
// to a harness that is gone (killed with SIGKILL) and remove only those.
const nsPrefix = "xsb-"

// cmdTimeout bounds every helper command (ip, ethtool, ovs-vsctl, ...).
const cmdTimeout = 30 * time.Second

// Cleanup is a stack of undo steps, run in reverse order. Every step that
// makes something (a namespace, a process, a temp dir) pushes its undo
// before it returns, so a failure half-way leaves nothing behind once Run
// is called.
type Cleanup struct {
	mu    sync.Mutex
	steps []cleanupStep
}

type cleanupStep struct {
	what string
	fn   func() error
}

// Push adds an undo step.
func (c *Cleanup) Push(what string, fn func() error) {
	c.mu.Lock()
	c.steps = append(c.steps, cleanupStep{what, fn})
	c.mu.Unlock()
}

// Run undoes everything, last first, and reports every failure.
func (c *Cleanup) Run() error {
	c.mu.Lock()
	steps := c.steps
	c.steps = nil
	c.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %s: %w", steps[i].what, err))
		}
	}
	return errors.Join(errs...)
}

// NS is a named network namespace made by the benchmark.
type NS struct {
	Name string
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// NewNS makes a namespace with loopback up and IPv6 off (its router
// solicitations and MLD reports would be stray frames), and pushes its
// removal. role names it for people reading `ip netns`.
func NewNS(ctx context.Context, cl *Cleanup, role string) (*NS, error) {
	ns := &NS{Name: fmt.Sprintf("%s%d-%s-%s", nsPrefix, os.Getpid(), randHex(3), role)}
	if _, err := run(ctx, "ip", "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	cl.Push("namespace "+ns.Name, func() error { return deleteNS(ns.Name) })
	if _, err := ns.Run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	if _, err := ns.Run(ctx, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		return nil, err
	}
	return ns, nil
}

// deleteNS removes a namespace; its devices go with it (veth peers in other
// namespaces too).
func deleteNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

var staleNS = regexp.MustCompile(`^` + regexp.QuoteMeta(nsPrefix) + `(\d+)-`)

// RemoveStale deletes namespaces left by benchmark runs whose harness
// process no longer exists (killed with SIGKILL, or a machine that lost
// power mid-run). It touches only names with the benchmark's prefix.
func RemoveStale(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := staleNS.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || processExists(pid) {
			continue
		}
		if err := deleteNS(f[0]); err != nil {
			return removed, err
		}
		removed = append(removed, f[0])
	}
	return removed, nil
}

func processExists(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// Cmd returns a command that runs inside the namespace.
func (ns *NS) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// Run runs a command in the namespace, bounded by cmdTimeout.
func (ns *NS) Run(ctx context.Context, args ...string) (string, error) {
	return run(ctx, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

func run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Do runs fn on an OS thread switched into the namespace: for sockets
// bound to a device there, netlink calls and devmap updates (a devmap
// resolves ifindexes in the caller's namespace). The thread is discarded
// afterwards, so no other goroutine ever runs in the wrong namespace.
func (ns *NS) Do(fn func() error) error { return inns.Do(ns.Name, fn) }

// Veth makes a veth pair with one queue each way: a in namespace na, b in
// nb, both up, with transmit checksum offload off (AF_XDP frames carry no
// offload state) and IPv6 off.
func Veth(ctx context.Context, na *NS, a string, nb *NS, b string) error {
	if _, err := na.Run(ctx, "ip", "link", "add", a, "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
		"peer", "name", b, "numtxqueues", "1", "numrxqueues", "1", "netns", nb.Name); err != nil {
		return err
	}
	for _, end := range []struct {
		ns  *NS
		dev string
	}{{na, a}, {nb, b}} {
		if _, err := end.ns.Run(ctx, "ip", "link", "set", end.dev, "up"); err != nil {
			return err
		}
		// Best effort: only offloads, and the numbers do not depend on it.
		_, _ = end.ns.Run(ctx, "ethtool", "-K", end.dev, "tx", "off")
	}
	return nil
}

// MAC reads a device's address.
func (ns *NS) MAC(ctx context.Context, dev string) (string, error) {
	out, err := ns.Run(ctx, "cat", "/sys/class/net/"+dev+"/address")
	return strings.TrimSpace(out), err
}

// Ifindex reads a device's index.
func (ns *NS) Ifindex(ctx context.Context, dev string) (int, error) {
	out, err := ns.Run(ctx, "cat", "/sys/class/net/"+dev+"/ifindex")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(out))
}

// LinkStats are a device's drop counters from the kernel.
type LinkStats struct {
	RxPackets, TxPackets, RxDropped, TxDropped, RxErrors, TxErrors uint64
}

// Stats reads a device's counters from sysfs.
func (ns *NS) Stats(ctx context.Context, dev string) (LinkStats, error) {
	var s LinkStats
	names := []string{"rx_packets", "tx_packets", "rx_dropped", "tx_dropped", "rx_errors", "tx_errors"}
	args := []string{"cat"}
	for _, n := range names {
		args = append(args, "/sys/class/net/"+dev+"/statistics/"+n)
	}
	out, err := ns.Run(ctx, args...)
	if err != nil {
		return s, err
	}
	f := strings.Fields(out)
	if len(f) != len(names) {
		return s, fmt.Errorf("stats of %s: %q", dev, out)
	}
	v := make([]uint64, len(f))
	for i := range f {
		v[i], _ = strconv.ParseUint(f[i], 10, 64)
	}
	s = LinkStats{v[0], v[1], v[2], v[3], v[4], v[5]}
	return s, nil
}
