// Command demo is `make demo`: xdpswitchd with configs/demo.yaml, two QEMU
// guests booted without a NIC, attached to the switch with `vmctl attach`
// while they run, their DHCP leases, pings between them and to the gateway,
// a restart of the daemon that the guests' NICs outlive, the forwarding
// database and counters, and the NICs detached again. It
// prints every operator command it runs, and removes everything it made.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/xdpswitch/xdpswitch/config"
	"github.com/xdpswitch/xdpswitch/internal/guest"
)

const (
	configPath = "configs/demo.yaml"
	daemonBin  = "bin/xdpswitchd"
	vmctlBin   = "bin/vmctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m== %s\033[0m\n", fmt.Sprintf(format, args...))
}

// operator runs a command as an operator would type it, showing it first.
func operator(ctx context.Context, args ...string) (string, error) {
	fmt.Printf("$ %s\n", strings.Join(args, " "))
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return string(out), fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

func run(ctx context.Context) (err error) {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	sock := cfg.APISocket

	step("Guest image: Debian's kernel and busybox (cached in build/guest)")
	img, err := guest.Build("build/guest")
	if err != nil {
		return err
	}
	fmt.Printf("kernel %s\ninitrd %s\n", img.Kernel, img.Initrd)

	step("xdpswitchd --config %s", configPath)
	b, _ := os.ReadFile(configPath)
	fmt.Print(indent(string(b)))
	daemon, err := startDaemon(ctx)
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping xdpswitchd: it prints its counters and leases, detaches its programs and removes its host port")
		stopDaemon(daemon)
		os.RemoveAll(cfg.RunDir)
	}()

	step("Two guests under QEMU (software emulation), booted without a NIC")
	dir, err := os.MkdirTemp("", "xsdemo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var vms []*guest.VM
	defer func() {
		for _, vm := range vms {
			vm.Close()
		}
	}()
	for _, name := range []string{"vm1", "vm2"} {
		vm, err := guest.Boot(ctx, guest.BootOptions{Image: img, Name: name, Dir: filepath.Join(dir, name)})
		if err != nil {
			return fmt.Errorf("boot %s: %w", name, err)
		}
		vms = append(vms, vm)
		fmt.Printf("%s: QEMU pid %d, QMP socket %s\n", name, vm.PID(), vm.QMPSocket)
	}

	step("Attach a NIC to each running guest and plug it into network demo")
	for i, vm := range vms {
		mac := fmt.Sprintf("52:54:00:99:00:%02x", i+1)
		if _, err := operator(ctx, vmctlBin, "--socket", sock, "attach", vm.Name, "--qmp", vm.QMPSocket, "--network", "demo", "--mac", mac); err != nil {
			return err
		}
	}

	step("The guests ask for addresses (udhcpc on the new eth0)")
	ips := make([]string, len(vms))
	for i, vm := range vms {
		lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		ip, router, mac, err := vm.WaitLease(lctx, "eth0")
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", vm.Name, err)
		}
		ips[i] = ip
		fmt.Printf("%s: eth0 %s got %s, router %s\n", vm.Name, mac, ip, router)
	}
	if _, err := operator(ctx, vmctlBin, "--socket", sock, "leases"); err != nil {
		return err
	}

	step("Each guest pings the other and the gateway, through the switch")
	targets := [][2]string{{ips[1], "vm2"}, {ips[0], "vm1"}}
	for i, vm := range vms {
		for _, dst := range []string{targets[i][0], "10.99.0.1"} {
			out, code, err := vm.Run(ctx, "ping -c 3 -W 2 "+dst)
			if err != nil {
				return err
			}
			fmt.Printf("%s$ ping -c 3 -W 2 %s\n%s", vm.Name, dst, indent(lastLines(out, 2)))
			if code != 0 {
				return fmt.Errorf("%s could not ping %s", vm.Name, dst)
			}
		}
	}

	step("Restart xdpswitchd (an upgrade, say): it plugs the guests' NICs in again")
	stopDaemon(daemon)
	if daemon, err = startDaemon(ctx); err != nil {
		return err
	}
	out, code, err := vms[0].Run(ctx, "ping -c 3 -W 2 "+ips[1])
	if err != nil {
		return err
	}
	fmt.Printf("%s$ ping -c 3 -W 2 %s\n%s", vms[0].Name, ips[1], indent(lastLines(out, 2)))
	if code != 0 {
		return fmt.Errorf("%s could not ping %s after the restart", vms[0].Name, ips[1])
	}

	step("What the switch learned, and its counters")
	for _, args := range [][]string{{"networks"}, {"ports"}, {"fdb"}, {"rules", "--network", "demo"}, {"stats"}} {
		if _, err := operator(ctx, append([]string{vmctlBin, "--socket", sock}, args...)...); err != nil {
			return err
		}
	}

	step("Detach the NICs again")
	for i, vm := range vms {
		mac := fmt.Sprintf("52:54:00:99:00:%02x", i+1)
		if _, err := operator(ctx, vmctlBin, "--socket", sock, "detach", vm.Name, "--qmp", vm.QMPSocket, "--mac", mac); err != nil {
			return err
		}
	}
	if _, err := operator(ctx, vmctlBin, "--socket", sock, "ports"); err != nil {
		return err
	}
	return nil
}

// startDaemon runs xdpswitchd until it is ready, showing the lines of its
// log that tell the story: ports and the host port coming and going.
func startDaemon(ctx context.Context) (*exec.Cmd, error) {
	daemon := exec.Command(daemonBin, "--config", configPath)
	stderr, err := daemon.StderrPipe()
	if err != nil {
		return nil, err
	}
	daemon.Stdout = os.Stdout
	if err := daemon.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "level=INFO") && !strings.Contains(line, "xdpswitchd ready") && !strings.Contains(line, "host port") &&
				!strings.Contains(line, "port added") && !strings.Contains(line, "port removed") && !strings.Contains(line, "plugged in again") {
				continue // keep the demo's output to what it shows
			}
			fmt.Println("  daemon: " + line)
			if strings.Contains(line, "xdpswitchd ready") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
		return daemon, nil
	case <-time.After(30 * time.Second):
		err = errors.New("the daemon did not get ready in 30 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	stopDaemon(daemon)
	return nil, err
}

// stopDaemon stops xdpswitchd as an operator would, and waits for it.
func stopDaemon(daemon *exec.Cmd) {
	if daemon == nil {
		return
	}
	daemon.Process.Signal(syscall.SIGTERM)
	daemon.Wait()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
