// Command xsbench measures xdpswitchd against the Linux bridge, an XDP
// devmap redirect and Open vSwitch's userspace datapath with afxdp ports,
// with an AF_XDP generator and an XDP counting sink in network namespaces
// it makes and removes. `make bench` runs it in full, `make bench-quick`
// as a seconds-long sanity pass. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xdpswitch/xdpswitch/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "sanity pass: tiny durations, one round, 64-byte frames, smallest scaling points")
	out := flag.String("out", "bench/results", "`dir`ectory for results.md, results.json and the plots")
	only := flag.String("candidates", "", "comma-separated `names` to run (default all): generator-alone,xdpswitchd,linux-bridge,xdp-devmap,ovs-afxdp")
	sizes := flag.String("sizes", "64,512,1518", "frame `sizes` with FCS")
	rounds := flag.Int("rounds", 3, "rounds of the main comparison")
	scaleRounds := flag.Int("scale-rounds", 2, "rounds of the scaling runs")
	fdb := flag.String("fdb", "1,1000,10000,100000", "FDB sizes (MACs per side) for the scaling runs; empty for none")
	rules := flag.String("rules", "100,1000,10000", "network rule counts for xdpswitchd's scaling runs (none matches the traffic); empty for none")
	ports := flag.String("ports", "2,8,32,64", "port counts for the scaling runs; empty for none")
	vxlan := flag.Bool("vxlan", true, "VXLAN encap/decap runs")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "warm-up before each measured window")
	window := flag.Duration("window", 2*time.Second, "measured window at full speed and at 80%")
	cpuWindow := flag.Duration("cpu-window", 4*time.Second, "measured window at the fixed rate")
	cpuRate := flag.Float64("cpu-rate", 100000, "fixed offered load (frames/s) for CPU per frame, 64-byte frames")
	genCPU := flag.Int("gen-cpu", 0, "CPU the generator's sending thread is pinned to (-1: none)")
	switchCPU := flag.Int("switch-cpu", 1, "CPU xdpswitchd and ovs-vswitchd are pinned to (-1: none)")
	ovsSleep := flag.Int("ovs-pmd-maxsleep", 0, "OVS other_config:pmd-maxsleep in µs (0: OVS's default, busy polling)")
	fill := flag.Int("daemon-fill-frames", 0, "override xdpswitchd's fill_frames (0: the benchmark's config, 128)")
	daemonBin := flag.String("daemon", "", "xdpswitchd `binary` (default: build ./cmd/xdpswitchd)")
	timeout := flag.Duration("timeout", 60*time.Minute, "bound on the whole run")
	quiet := flag.Duration("quiet-wait", 15*time.Second, "before each run, wait at most this long for other load on the machine to calm down")
	replot := flag.String("replot", "", "write the tables and plots of an earlier run's `results.json` into -out again, without measuring")
	flag.Parse()

	if *replot != "" {
		rep, err := bench.LoadReport(*replot)
		if err == nil {
			var md string
			md, err = rep.Write(*out)
			fmt.Print(md)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "xsbench: %v\n", err)
			return 1
		}
		return 0
	}

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "xsbench: needs root (namespaces, XDP, AF_XDP)")
		return 1
	}
	if runtime.NumCPU() < 2 {
		*genCPU, *switchCPU = -1, -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// SIGINT/SIGTERM end the run; every step removes what it made.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "xsbench: %v: stopping and cleaning up\n", s)
		cancel()
	}()

	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	if removed, err := bench.RemoveStale(ctx); err != nil {
		logf("removing stale namespaces: %v", err)
	} else if len(removed) > 0 {
		logf("removed namespaces of earlier runs that died: %s", strings.Join(removed, " "))
	}

	tmp, err := os.MkdirTemp("", "xsbench-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	// The commit the daemon is built from, taken before the build: others
	// may commit while the benchmark runs.
	commit := bench.GitCommit()
	bin := *daemonBin
	if bin == "" {
		bin = filepath.Join(tmp, "xdpswitchd")
		logf("building ./cmd/xdpswitchd")
		bctx, bcancel := context.WithTimeout(ctx, 10*time.Minute)
		b, err := exec.CommandContext(bctx, "go", "build", "-o", bin, "./cmd/xdpswitchd").CombinedOutput()
		bcancel()
		if err != nil {
			logf("building xdpswitchd: %v\n%s", err, b)
			bin = "" // the daemon's runs record the failure
		}
	}

	all := []bench.Candidate{bench.GenAlone{}, bench.Daemon{}, bench.Bridge{}, bench.DevmapRedirect{}, bench.OVS{}}
	var cands []bench.Candidate
	for _, c := range all {
		if *only == "" || contains(strings.Split(*only, ","), c.Name()) {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		logf("no candidate matches %q", *only)
		return 2
	}
	opt := bench.Options{
		Warmup: *warmup, Window: *window, CPUWindow: *cpuWindow, CPURate: *cpuRate,
		Load80: true, LearnRate: 50000, GenCPU: *genCPU, QuietWait: *quiet,
	}
	plan := bench.Plan{
		Candidates: cands, Sizes: ints(*sizes), Rounds: *rounds, CPUSize: 64,
		FDBSizes: ints(*fdb), PortCounts: ints(*ports), RuleCounts: ints(*rules), VXLAN: *vxlan, ScaleRounds: *scaleRounds,
		Opt: opt,
	}
	plan.ScaleOpt = opt
	plan.ScaleOpt.Load80 = false
	if *quick {
		q := bench.Options{Warmup: 100 * time.Millisecond, Window: 200 * time.Millisecond, CPUWindow: 200 * time.Millisecond,
			CPURate: 20000, Load80: true, LearnRate: 50000, GenCPU: *genCPU}
		plan.Opt, plan.ScaleOpt = q, q
		plan.ScaleOpt.Load80 = false
		plan.Sizes, plan.Rounds, plan.ScaleRounds = []int{64}, 1, 1
		plan.FDBSizes, plan.PortCounts, plan.RuleCounts = []int{100}, []int{4}, []int{1000}
	}
	env := &bench.Env{TempDir: tmp, Daemon: bin, SwitchCPU: *switchCPU, OVSPMDSleep: *ovsSleep, DaemonFillFrames: *fill, Log: logf}
	if bin == "" {
		env.Daemon = "/nonexistent/xdpswitchd (build failed)"
	}
	logf("plan: %s", plan)
	started := time.Now()
	results := plan.Execute(ctx, env)
	rep := bench.NewReport(plan, results, started, time.Since(started))
	rep.Commit = commit
	if *daemonBin != "" {
		rep.Commit = "daemon given with -daemon " + *daemonBin
	}
	if ctx.Err() != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("The run was cut short (%v); the tables hold what finished.", context.Cause(ctx)))
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		logf("%v", err)
		return 1
	}
	j, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "results.json"), j, 0o644); err != nil {
		logf("%v", err)
		return 1
	}
	md, err := rep.Write(*out)
	if err != nil {
		logf("writing the report: %v", err)
		return 1
	}
	fmt.Print(md)
	logf("results in %s (%v)", *out, time.Since(started).Round(time.Second))
	if ctx.Err() != nil {
		return 1
	}
	return 0
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if strings.TrimSpace(x) == v {
			return true
		}
	}
	return false
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "xsbench: %q is not a number\n", f)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}
