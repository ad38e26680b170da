// Command xdpswitchd is the switch daemon: it plugs the configured devices
// into AF_XDP sockets and switches frames between them until it is told to
// stop, then detaches everything it attached.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/config"
	"github.com/xdpswitch/xdpswitch/daemon"
	"github.com/xdpswitch/xdpswitch/dataplane"
)

const defaultConfig = "/etc/xdpswitch/xdpswitch.yaml"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("xdpswitchd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "configuration `file`")
	checkPath := fs.String("check-config", "", "check a configuration `file` and exit: 0 when it is valid, 1 with the problems otherwise")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: xdpswitchd [--config FILE] | --check-config FILE\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "xdpswitchd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *checkPath != "" {
		if _, err := config.Load(*checkPath); err != nil {
			fmt.Fprintf(stderr, "xdpswitchd: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", *checkPath)
		return 0
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "xdpswitchd: %v\n", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel(cfg.LogLevel)}))
	if err := serve(*configPath, cfg, log, stdout); err != nil {
		log.Error("xdpswitchd stopped", "err", err)
		return 1
	}
	return 0
}

func logLevel(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s)) // the config was checked
	return l
}

func serve(configPath string, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	unlock, err := lock(cfg.RunDir)
	if err != nil {
		return err
	}
	defer unlock()

	d, err := daemon.Start(cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := d.Close(); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}()

	// Deferred after d.Close, so they stop first: no API call lands on a
	// daemon that is shutting down.
	apiListener, err := daemon.ListenAPI(cfg.APISocket)
	if err != nil {
		return err
	}
	stopAPI := serveHTTP(apiListener, d.APIHandler(), log)
	defer func() {
		stopAPI()
		_ = os.Remove(cfg.APISocket)
	}()
	if cfg.MetricsListen != "" {
		ml, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", d.MetricsHandler())
		defer serveHTTP(ml, mux, log)()
		log.Info("metrics", "url", "http://"+ml.Addr().String()+"/metrics")
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	log.Info("xdpswitchd ready", "networks", len(cfg.Networks), "queues", cfg.Queues, "api", cfg.APISocket, "pid", os.Getpid())
	for sig := range sigs {
		switch sig {
		case syscall.SIGUSR1:
			writeState(stdout, d)
			continue
		case syscall.SIGHUP:
			reload(configPath, d, log)
			continue
		}
		log.Info("shutting down", "signal", sig.String())
		break
	}
	writeState(stdout, d)
	return nil
}

// reload applies the config file as it is now, or says why not; the
// switch runs on either way.
func reload(path string, d *daemon.Daemon, log *slog.Logger) {
	cfg, err := config.Load(path)
	if err == nil {
		err = d.Reload(cfg)
	}
	if err != nil {
		log.Error("config reload", "config", path, "err", err)
		return
	}
	log.Info("config reloaded", "config", path, "networks", len(cfg.Networks))
}

// writeState prints the ports' counters, where the frames are and the
// DHCP leases.
func writeState(w io.Writer, d *daemon.Daemon) {
	writeCounters(w, d.Switch().Ports())
	writeFrames(w, d.Switch())
	leases, _ := d.Leases("")
	if len(leases) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tMAC\tIP\tHOSTNAME\tSTATE\tEXPIRES")
	for _, l := range leases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Network, l.MAC, l.IP, l.Hostname, l.State, l.Expiry.Format(time.RFC3339))
	}
	tw.Flush()
}

// serveHTTP serves handler on l until the returned function is called.
func serveHTTP(l net.Listener, handler http.Handler, log *slog.Logger) (stop func()) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "addr", l.Addr(), "err", err)
		}
	}()
	return func() { _ = srv.Close() }
}

// lock takes the run directory's lock file, so that a second daemon with
// the same run directory stops with a clear message instead of fighting
// the first for its devices.
func lock(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run dir: %w", err)
	}
	path := filepath.Join(dir, "xdpswitchd.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(b))
			return nil, fmt.Errorf("another xdpswitchd (pid %s) holds %s; stop it first or give this one another run_dir", pid, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = os.Remove(path)
		f.Close()
	}, nil
}

// writeFrames prints where each queue's UMEM frames are, and whether
// each is where the switch believes: at exit, the check that none went
// missing while the daemon ran.
func writeFrames(w io.Writer, sw *dataplane.Switch) {
	accts, _ := sw.CheckFrames()
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tUMEM FRAMES\tFREE\tFILL\tTX\tHELD\tACCOUNTING")
	for _, a := range accts {
		check := "ok"
		if a.Err != nil {
			check = a.Err.Error()
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%s\n", a.Queue, a.Total, a.Free, a.Fill, a.Tx, a.Held, check)
	}
	tw.Flush()
}

// writeCounters prints a table of every port's counters.
func writeCounters(w io.Writer, ports []dataplane.PortInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tNETWORK\tXDP\tBIND\tRX PKTS\tRX BYTES\tTX PKTS\tTX BYTES\tDROPS")
	for _, p := range ports {
		c := p.Counters
		var drops []string
		for _, r := range dataplane.DropReasons() {
			if n := c.Drops[r.String()]; n > 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", r, n))
			}
		}
		if c.Socket.RxDropped > 0 {
			drops = append(drops, fmt.Sprintf("kernel=%d", c.Socket.RxDropped))
		}
		d := strings.Join(drops, ",")
		if d == "" {
			d = "0"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", p.Name, p.Network, p.XDPMode, p.BindMode, c.RxPackets, c.RxBytes, c.TxPackets, c.TxBytes, d)
	}
	tw.Flush()
}
