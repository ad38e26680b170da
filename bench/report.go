package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Report is a finished benchmark: the machine, every run, and the medians
// the tables and plots show.
type Report struct {
	Date      time.Time     `json:"date"`
	Took      time.Duration `json:"took_ns"`
	Machine   string        `json:"machine"`
	Cores     int           `json:"cores"`
	Kernel    string        `json:"kernel"`
	Commit    string        `json:"commit"`
	GoVersion string        `json:"go_version"`
	OVS       string        `json:"ovs_version"`
	Plan      string        `json:"plan"`
	CPURate   float64       `json:"cpu_rate"`
	CPUSize   int           `json:"cpu_size"`
	Results   []Result      `json:"results"`
	Notes     []string      `json:"notes"`

	plan Plan
}

// NewReport gathers the machine's facts around results.
func NewReport(p Plan, results []Result, started time.Time, took time.Duration) *Report {
	r := &Report{
		Date: started, Took: took, Machine: cpuModel(), Cores: runtime.NumCPU(),
		Kernel: strings.TrimSpace(cmdOut("uname", "-r")), GoVersion: runtime.Version(),
		Plan: p.String(), CPURate: p.Opt.CPURate, CPUSize: p.CPUSize, Results: results, plan: p,
	}
	r.Commit = GitCommit()
	if v := cmdOut("ovs-vswitchd", "--version"); v != "" {
		r.OVS = firstLine(v)
	}
	return r
}

// GitCommit names the commit of the work tree, and says when the work tree
// differs from it (the daemon is built from the work tree).
func GitCommit() string {
	commit := strings.TrimSpace(cmdOut("git", "rev-parse", "--short=12", "HEAD"))
	if commit == "" {
		return "unknown"
	}
	if strings.TrimSpace(cmdOut("git", "status", "--porcelain", "--untracked-files=no")) != "" {
		commit += " (work tree modified)"
	}
	return commit
}

func cmdOut(args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ok returns the runs of a candidate in a scenario that finished.
func (r *Report) ok(cand string, sc Scenario) []Result {
	var out []Result
	for _, x := range r.Results {
		if x.Candidate == cand && x.Scenario == sc && x.Err == "" {
			out = append(out, x)
		}
	}
	return out
}

// failure returns why a candidate has no finished run in a scenario.
func (r *Report) failure(cand string, sc Scenario) string {
	for _, x := range r.Results {
		if x.Candidate == cand && x.Scenario == sc && x.Err != "" {
			return x.Err
		}
	}
	return ""
}

// med is the median over finished runs of f (NaN where f gives NaN).
func (r *Report) med(cand string, sc Scenario, f func(Result) float64) float64 {
	var v []float64
	for _, x := range r.ok(cand, sc) {
		if y := f(x); !math.IsNaN(y) {
			v = append(v, y)
		}
	}
	return median(v)
}

func maxPPS(x Result) float64 {
	if x.Max == nil {
		return math.NaN()
	}
	return x.Max.DeliveredPPS
}

// Per-frame CPU figures of the fixed-rate phase, in ns.
func procNs(x Result) float64 {
	if x.Fixed == nil || x.Fixed.SwitchCPU == 0 && !userspace(x.Candidate) {
		return math.NaN()
	}
	return x.Fixed.PerFrame(x.Fixed.SwitchCPU)
}

func tasksNs(x Result) float64 {
	if x.Fixed == nil {
		return math.NaN()
	}
	f := x.Fixed
	return f.PerFrame(f.SwitchCPU + f.GenCPU + f.SoftirqdCPU)
}

func sysNs(x Result) float64 {
	if x.Fixed == nil {
		return math.NaN()
	}
	return x.Fixed.PerFrame(x.Fixed.SysBusy)
}

func sysKernelNs(x Result) float64 {
	if x.Fixed == nil {
		return math.NaN()
	}
	return x.Fixed.PerFrame(x.Fixed.SysKernel)
}

func userspace(cand string) bool { return cand == (Daemon{}).Name() || cand == (OVS{}).Name() }

func (r *Report) candidates() []string {
	var names []string
	for _, c := range r.plan.Candidates {
		names = append(names, c.Name())
	}
	return names
}

func mainSc(size int) Scenario { return Scenario{Mode: ModePlain, Size: size, PortCount: 2} }

// baseline returns the generator alone's per-frame figure f at the CPU
// size, the cost that every candidate's run also carries.
func (r *Report) baseline(f func(Result) float64) float64 {
	return r.med(GenAlone{}.Name(), mainSc(r.CPUSize), f)
}

// cpuFigures are a candidate's CPU per frame in one scenario: the switch
// (process time for a userspace switch, kernel time over the generator
// alone for a kernel one), and both differential figures.
type cpuFigures struct {
	Switch, Method, Tasks, System, Other float64
	MethodName                           string
}

func (r *Report) cpu(cand string, sc Scenario) cpuFigures {
	c := cpuFigures{
		Tasks:  r.med(cand, sc, tasksNs) - r.baseline(tasksNs),
		System: r.med(cand, sc, sysNs) - r.baseline(sysNs),
		Other: r.med(cand, sc, func(x Result) float64 {
			if x.Fixed == nil {
				return math.NaN()
			}
			return x.Fixed.OtherCPU().Seconds() / x.Fixed.WindowTime.Seconds()
		}),
	}
	switch {
	case cand == (GenAlone{}).Name():
		c.Switch, c.MethodName = math.NaN(), "-"
	case userspace(cand):
		c.Switch, c.MethodName = r.med(cand, sc, procNs), "process"
	default:
		c.Switch, c.MethodName = r.med(cand, sc, sysKernelNs)-r.baseline(sysKernelNs), "/proc/stat sys+irq+softirq − gen-alone"
	}
	return c
}

func f0(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func kpps(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f", v/1000)
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func esc(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// Write writes results.md and the plots into dir and returns the markdown.
func (r *Report) Write(dir string) (string, error) {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# xdpswitch benchmark\n\n")
	w("| | |\n|---|---|\n")
	w("| date | %s (took %v) |\n", r.Date.UTC().Format(time.RFC3339), r.Took.Round(time.Second))
	w("| machine | %s, %d cores |\n| kernel | %s |\n| commit | %s |\n| Go | %s |\n| Open vSwitch | %s |\n",
		r.Machine, r.Cores, r.Kernel, r.Commit, r.GoVersion, orDash(r.OVS))
	w("| plan | %s |\n\n", r.Plan)
	w("Medians across rounds. Delivered = frames counted by the sink's XDP program; offered = frames the generator's AF_XDP socket completed. " +
		"kpps = thousands of frames per second; Gbps counts frame bytes without FCS. See bench/README.md for the method.\n\n")
	for _, n := range r.Notes {
		w("> %s\n\n", n)
	}

	cands := r.candidates()
	gen, dmn := (GenAlone{}).Name(), (Daemon{}).Name()

	w("## Throughput at full speed\n\n")
	w("| size | candidate | offered kpps | delivered kpps | Gbps | loss %% | counted | uncounted | lost at 80%% of own max | xdpswitchd ÷ this | others' load (cores) |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, size := range r.plan.Sizes {
		sc := mainSc(size)
		dm := r.med(dmn, sc, maxPPS)
		for _, c := range cands {
			if len(r.ok(c, sc)) == 0 {
				w("| %d | %s | %s ||||||||\n", size, c, "FAILED: "+esc(r.failure(c, sc)))
				continue
			}
			m := func(f func(*Phase) float64) float64 {
				return r.med(c, sc, func(x Result) float64 {
					if x.Max == nil {
						return math.NaN()
					}
					return f(x.Max)
				})
			}
			lost80 := r.med(c, sc, func(x Result) float64 {
				if x.At80 == nil {
					return math.NaN()
				}
				return float64(x.At80.Lost())
			})
			w("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", size, c,
				kpps(m(func(p *Phase) float64 { return p.OfferedPPS })), kpps(m(func(p *Phase) float64 { return p.DeliveredPPS })),
				f2(m(func(p *Phase) float64 { return p.DeliveredBPS / 1e9 })),
				f2(m(func(p *Phase) float64 { return 100 * p.LossRatio() })),
				f0(m(func(p *Phase) float64 { return float64(p.Counted) })), f0(m(func(p *Phase) float64 { return float64(p.Uncounted()) })),
				f0(lost80), ratio(dm, m(func(p *Phase) float64 { return p.DeliveredPPS })),
				f2(m(func(p *Phase) float64 { return p.OtherCPU().Seconds() / p.WindowTime.Seconds() })))
		}
	}
	w("\n")

	if r.CPURate > 0 {
		sc := mainSc(r.CPUSize)
		w("## CPU per forwarded frame at a fixed %.0f frames/s (%d-byte frames)\n\n", r.CPURate, r.CPUSize)
		w("| candidate | delivered kpps | switch ns/frame | method | Δ tasks ns/frame vs gen-alone | Δ system ns/frame vs gen-alone | others' load (cores) |\n")
		w("|---|---|---|---|---|---|---|\n")
		for _, c := range cands {
			if len(r.ok(c, sc)) == 0 {
				continue
			}
			f := r.cpu(c, sc)
			d := r.med(c, sc, func(x Result) float64 {
				if x.Fixed == nil {
					return math.NaN()
				}
				return x.Fixed.DeliveredPPS
			})
			if c == gen {
				f.Tasks, f.System = r.baseline(tasksNs), r.baseline(sysNs)
				w("| %s (absolute, the baseline) | %s | – | – | %s | %s | %s |\n", c, kpps(d), f0(f.Tasks), f0(f.System), f2(f.Other))
				continue
			}
			w("| %s | %s | %s | %s | %s | %s | %s |\n", c, kpps(d), f0(f.Switch), f.MethodName, f0(f.Tasks), f0(f.System), f2(f.Other))
		}
		w("\n")
	}

	r.writeScaling(&b)
	r.writeMemory(&b)
	r.writeTargets(&b)

	w("## Plots\n\n")
	plots, err := r.plots(dir)
	for _, p := range plots {
		w("![%s](%s)\n\n", p, p)
	}
	if err != nil {
		w("Plotting failed: %v\n\n", err)
	}

	w("## Runs that failed or were skipped\n\n")
	any := false
	for _, x := range r.Results {
		if x.Err != "" {
			any = true
			kind := "failed"
			if x.Skipped {
				kind = "skipped"
			}
			w("- %s, %s, round %d: %s: %s\n", x.Candidate, x.Scenario, x.Round+1, kind, esc(x.Err))
		}
	}
	if !any {
		w("None.\n")
	}
	md := b.String()
	return md, os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func (r *Report) scaled() []string {
	var out []string
	for _, c := range r.candidates() {
		switch c {
		case (Daemon{}).Name(), (Bridge{}).Name(), (OVS{}).Name():
			out = append(out, c)
		}
	}
	return out
}

func (r *Report) writeScaling(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	table := func(title, what string, points []int, sc func(int) Scenario) {
		if len(points) == 0 {
			return
		}
		w("## %s\n\n", title)
		w("Each cell: delivered kpps at full speed / Δ tasks ns per frame at %.0f frames/s (process ns per frame for userspace switches).\n\n", r.CPURate)
		w("| %s |", what)
		for _, c := range r.scaled() {
			w(" %s |", c)
		}
		w("\n|---|")
		for range r.scaled() {
			w("---|")
		}
		w("\n")
		for _, n := range points {
			w("| %d |", n)
			for _, c := range r.scaled() {
				s := sc(n)
				if len(r.ok(c, s)) == 0 {
					if e := r.failure(c, s); e != "" {
						w(" %s |", esc(firstLine(e)))
					} else {
						w(" – |")
					}
					continue
				}
				f := r.cpu(c, s)
				cell := fmt.Sprintf("%s / %s", kpps(r.med(c, s, maxPPS)), f0(f.Tasks))
				if userspace(c) {
					cell += fmt.Sprintf(" (%s)", f0(f.Switch))
				}
				if fe := r.med(c, s, func(x Result) float64 {
					if x.Detail == nil || x.Detail["fdb_entries"] == "" {
						return math.NaN()
					}
					var v float64
					fmt.Sscan(x.Detail["fdb_entries"], &v)
					return v
				}); !math.IsNaN(fe) && s.FDB > 1 {
					cell += fmt.Sprintf(", FDB %s", f0(fe))
				}
				w(" %s |", cell)
			}
			w("\n")
		}
		w("\n")
	}
	table("Scaling with the forwarding database", "MACs per side", r.plan.FDBSizes, func(n int) Scenario {
		return Scenario{Mode: ModePlain, Size: r.CPUSize, FDB: n, PortCount: 2}
	})
	table("Scaling with the number of ports (idle ports beyond A and B)", "ports", r.plan.PortCounts, func(n int) Scenario {
		return Scenario{Mode: ModePlain, Size: r.CPUSize, PortCount: n}
	})
	if d := (Daemon{}).Name(); len(r.plan.RuleCounts) > 0 && slices.Contains(r.candidates(), d) {
		w("## Rules in the switch (%s, %d-byte frames)\n\n", d, r.CPUSize)
		w("The network has this many rules (`bench/rules.go`), none matching the traffic: every frame is looked up in full and the default allows it. \"None\" is the main run.\n\n")
		w("| rules | delivered kpps | ÷ none | process ns/frame at %.0f frames/s | Δ vs none |\n|---|---|---|---|---|\n", r.CPURate)
		base := mainSc(r.CPUSize)
		basePPS, baseNs := r.med(d, base, maxPPS), r.cpu(d, base).Switch
		for _, n := range append([]int{0}, r.plan.RuleCounts...) {
			sc := base
			sc.Rules = n
			name := strconv.Itoa(n)
			if n == 0 {
				name = "none"
			}
			if len(r.ok(d, sc)) == 0 {
				why := r.failure(d, sc)
				if why == "" {
					why = "not run"
				}
				w("| %s | %s | | | |\n", name, esc(firstLine(why)))
				continue
			}
			pps, ns := r.med(d, sc, maxPPS), r.cpu(d, sc).Switch
			w("| %s | %s | %s | %s | %s |\n", name, kpps(pps), ratio(pps, basePPS), f0(ns), f0(ns-baseNs))
		}
		w("\n")
	}
	if r.plan.VXLAN {
		w("## VXLAN encap and decap vs plain switching (%d-byte inner frames)\n\n", r.CPUSize)
		w("| candidate | mode | delivered kpps | Δ tasks ns/frame | process ns/frame |\n|---|---|---|---|---|\n")
		for _, c := range []string{(Daemon{}).Name(), (Bridge{}).Name()} {
			if !slices.Contains(r.candidates(), c) {
				continue
			}
			for _, sc := range []Scenario{mainSc(r.CPUSize), {Mode: ModeEncap, Size: r.CPUSize, PortCount: 1}, {Mode: ModeDecap, Size: r.CPUSize, PortCount: 1}} {
				name := c
				if c == (Bridge{}).Name() && sc.Mode != ModePlain {
					name = "linux-bridge + vxlan device"
				}
				if len(r.ok(c, sc)) == 0 {
					why := r.failure(c, sc)
					if why == "" {
						why = "not run"
					}
					w("| %s | %s | %s | | |\n", name, sc.Mode, esc(why))
					continue
				}
				f := r.cpu(c, sc)
				proc := "–"
				if userspace(c) {
					proc = f0(f.Switch)
				}
				w("| %s | %s | %s | %s | %s |\n", name, sc.Mode, kpps(r.med(c, sc, maxPPS)), f0(f.Tasks), proc)
			}
		}
		w("\n")
	}
}

func (r *Report) writeMemory(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	var pts []int
	for _, n := range []int{2, 64} {
		if n == 2 || slices.Contains(r.plan.PortCounts, n) {
			pts = append(pts, n)
		}
	}
	if len(r.plan.PortCounts) > 0 {
		if m := slices.Max(r.plan.PortCounts); !slices.Contains(pts, m) {
			pts = append(pts, m)
		}
	}
	w("## Memory\n\nResident memory (VmRSS) of the switch process after its run, median; UMEM is what the daemon's config maps per queue.\n\n")
	w("| candidate | ports | RSS | UMEM |\n|---|---|---|---|\n")
	for _, c := range []string{(Daemon{}).Name(), (OVS{}).Name()} {
		for _, n := range pts {
			sc := Scenario{Mode: ModePlain, Size: r.CPUSize, PortCount: n}
			if n == 2 {
				sc = mainSc(r.CPUSize)
			}
			rss := r.med(c, sc, func(x Result) float64 {
				if x.Memory == nil {
					return math.NaN()
				}
				return float64(x.Memory.RSS)
			})
			if math.IsNaN(rss) {
				continue
			}
			umem := "–"
			if c == (Daemon{}).Name() {
				umem = mib(daemonFrames * daemonFrameSize)
			}
			w("| %s | %d | %s | %s |\n", c, n, mib(int64(rss)), umem)
		}
	}
	w("\n")
}

func (r *Report) writeTargets(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	dmn := (Daemon{}).Name()
	w("## Issue 7's targets for xdpswitchd\n\n| target | size | measured | met |\n|---|---|---|---|\n")
	verdict := func(ok bool, known bool) string {
		if !known {
			return "?"
		}
		if ok {
			return "yes"
		}
		return "**no**"
	}
	for _, size := range r.plan.Sizes {
		sc := mainSc(size)
		d := r.med(dmn, sc, maxPPS)
		for _, t := range []struct {
			name, cand string
			want       float64
		}{
			{"delivered ≥ 1.0x devmap", (DevmapRedirect{}).Name(), 1.0},
			{"delivered ≥ 1.0x OVS afxdp", (OVS{}).Name(), 1.0},
			{"delivered ≥ 1.7x bridge", (Bridge{}).Name(), 1.7},
			{"delivered ≥ 80% of generator alone", (GenAlone{}).Name(), 0.8},
		} {
			o := r.med(t.cand, sc, maxPPS)
			known := !math.IsNaN(d) && !math.IsNaN(o) && o > 0
			w("| %s | %d | %s | %s |\n", t.name, size, ratio(d, o), verdict(d/o >= t.want, known))
		}
		lost := r.med(dmn, sc, func(x Result) float64 {
			if x.At80 == nil {
				return math.NaN()
			}
			return float64(x.At80.Lost())
		})
		w("| no loss at 80%% of its own max | %d | %s frames lost | %s |\n", size, f0(lost), verdict(lost == 0, !math.IsNaN(lost)))
	}
	if r.CPURate > 0 {
		sc := mainSc(r.CPUSize)
		d, o := r.cpu(dmn, sc), r.cpu(OVS{}.Name(), sc)
		w("| CPU/frame ≤ ½ OVS (process time) | %d | %s vs %s ns | %s |\n", r.CPUSize, f0(d.Switch), f0(o.Switch),
			verdict(d.Switch <= o.Switch/2, !math.IsNaN(d.Switch) && !math.IsNaN(o.Switch)))
		w("| CPU/frame ≤ ½ OVS (Δ tasks vs gen-alone) | %d | %s vs %s ns | %s |\n", r.CPUSize, f0(d.Tasks), f0(o.Tasks),
			verdict(d.Tasks <= o.Tasks/2, !math.IsNaN(d.Tasks) && !math.IsNaN(o.Tasks)))
	}
	w("\n")
}

// LoadReport reads a results.json written by an earlier run, so that its
// tables and plots can be written again (xsbench -replot) without
// measuring again.
func LoadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &Report{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	byName := map[string]Candidate{}
	for _, c := range []Candidate{GenAlone{}, Daemon{}, Bridge{}, DevmapRedirect{}, OVS{}} {
		byName[c.Name()] = c
	}
	p := Plan{CPUSize: r.CPUSize, Opt: Options{CPURate: r.CPURate}}
	seen := map[string]bool{}
	for _, x := range r.Results {
		if c, ok := byName[x.Candidate]; ok && !seen[x.Candidate] {
			seen[x.Candidate] = true
			p.Candidates = append(p.Candidates, c)
		}
		s := x.Scenario
		switch {
		case s.Mode != ModePlain:
			p.VXLAN = true
		case s.Rules > 0:
			if !slices.Contains(p.RuleCounts, s.Rules) {
				p.RuleCounts = append(p.RuleCounts, s.Rules)
			}
		case s.FDB > 0:
			if !slices.Contains(p.FDBSizes, s.FDB) {
				p.FDBSizes = append(p.FDBSizes, s.FDB)
			}
		case s.PortCount > 2:
			if !slices.Contains(p.PortCounts, s.PortCount) {
				p.PortCounts = append(p.PortCounts, s.PortCount)
			}
		default:
			if !slices.Contains(p.Sizes, s.Size) {
				p.Sizes = append(p.Sizes, s.Size)
			}
		}
	}
	if len(p.PortCounts) > 0 && !slices.Contains(p.PortCounts, 2) {
		p.PortCounts = append([]int{2}, p.PortCounts...)
	}
	slices.Sort(p.FDBSizes)
	slices.Sort(p.PortCounts)
	slices.Sort(p.RuleCounts)
	r.plan = p
	return r, nil
}
