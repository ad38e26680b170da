package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Options are a run's durations and rates.
type Options struct {
	// Warmup runs before every measured window.
	Warmup time.Duration
	// Window is the measured time at full speed and at 80%.
	Window time.Duration
	// CPUWindow is the measured time at the fixed rate.
	CPUWindow time.Duration
	// CPURate is the fixed offered load (frames/s) for CPU per frame; 0
	// skips that phase.
	CPURate float64
	// Load80 runs a phase at 80% of the run's own full-speed delivery.
	Load80 bool
	// SkipMax skips the full-speed phase (scaling runs that only need
	// CPU per frame).
	SkipMax bool
	// LearnRate paces the pre-learning frames.
	LearnRate float64
	// GenCPU pins the generator's sending thread (-1: no pinning).
	GenCPU int
	// QuietWait bounds the wait, before each run and before a paced
	// phase is run again, for other load on the machine to calm down
	// (0: no wait).
	QuietWait time.Duration
}

// Phase is one measured load level.
type Phase struct {
	// Rate is the generator's target (frames/s); 0 is as fast as it can.
	Rate float64 `json:"rate"`
	// Window figures: frames offered (completed by the generator's socket)
	// and delivered (counted by the sink) per second, and delivered bits
	// per second (frame bytes without FCS).
	OfferedPPS   float64 `json:"offered_pps"`
	DeliveredPPS float64 `json:"delivered_pps"`
	DeliveredBPS float64 `json:"delivered_bps"`
	// Whole-phase counts, exact: after the generator stopped and the sink
	// settled. Lost = Offered - Delivered; Counted are drops the switch
	// and the kernel's devices report; Uncounted = Lost - Counted.
	Offered   uint64 `json:"offered"`
	Delivered uint64 `json:"delivered"`
	Counted   uint64 `json:"counted"`
	// CPU in the window: the switch process (/proc/PID/stat), the
	// generator's sending thread, the ksoftirqd threads, and the whole
	// machine (/proc/stat).
	SwitchCPU   time.Duration `json:"switch_cpu_ns"`
	GenCPU      time.Duration `json:"gen_cpu_ns"`
	SoftirqdCPU time.Duration `json:"ksoftirqd_cpu_ns"`
	SysBusy     time.Duration `json:"sys_busy_ns"`
	SysKernel   time.Duration `json:"sys_kernel_ns"`
	// WindowFrames is how many frames the sink counted in the window.
	WindowFrames uint64        `json:"window_frames"`
	WindowTime   time.Duration `json:"window_ns"`
	// Retries is how often a paced phase was run again because the
	// generator fell short of its rate.
	Retries int `json:"retries,omitempty"`
}

// OtherCPU is the machine's busy time in the window that none of the
// benchmark's tasks account for: other tenants' load, a noise indicator.
func (p *Phase) OtherCPU() time.Duration {
	return max(0, p.SysBusy-p.SwitchCPU-p.GenCPU-p.SoftirqdCPU)
}

// PerFrame divides d over the window's delivered frames, in ns.
func (p *Phase) PerFrame(d time.Duration) float64 {
	if p.WindowFrames == 0 {
		return 0
	}
	return float64(d) / float64(p.WindowFrames)
}

// Lost is what was offered and never delivered.
func (p *Phase) Lost() int64 { return int64(p.Offered) - int64(p.Delivered) }

// Uncounted is lost and reported by no one.
func (p *Phase) Uncounted() int64 { return p.Lost() - int64(p.Counted) }

// LossRatio is Lost/Offered.
func (p *Phase) LossRatio() float64 {
	if p.Offered == 0 {
		return 0
	}
	return float64(p.Lost()) / float64(p.Offered)
}

// Result is one candidate in one scenario in one round.
type Result struct {
	Candidate string            `json:"candidate"`
	Scenario  Scenario          `json:"scenario"`
	Round     int               `json:"round"`
	Max       *Phase            `json:"max,omitempty"`
	At80      *Phase            `json:"at80,omitempty"`
	Fixed     *Phase            `json:"fixed,omitempty"`
	Err       string            `json:"error,omitempty"`
	Skipped   bool              `json:"skipped,omitempty"` // not supported: Err says why
	Detail    map[string]string `json:"detail,omitempty"`
	Memory    *Memory           `json:"memory,omitempty"`
	Duration  time.Duration     `json:"duration_ns"`
}

// RunOne builds the topology for sc, starts cand, measures and removes
// everything again, also when it fails or ctx ends.
func RunOne(ctx context.Context, env *Env, cand Candidate, sc Scenario, opt Options, round int) (res Result) {
	start := time.Now()
	res = Result{Candidate: cand.Name(), Scenario: sc, Round: round}
	cl := &Cleanup{}
	defer func() {
		if err := cl.Run(); err != nil {
			env.logf("  cleanup: %v", err)
			if res.Err == "" {
				res.Err = err.Error()
			}
		}
		res.Duration = time.Since(start)
	}()
	if other, waited := waitQuiet(ctx, 0.3, opt.QuietWait); waited > time.Second {
		env.logf("  waited %v for other load to calm down (now %.2f cores)", waited.Round(time.Second), other)
	}
	err := runOne(ctx, env, cand, sc, opt, &res, cl)
	if err != nil {
		res.Err = err.Error()
		res.Skipped = errors.Is(err, ErrUnsupported)
	}
	return res
}

func runOne(ctx context.Context, env *Env, cand Candidate, sc Scenario, opt Options, res *Result, cl *Cleanup) error {
	if _, ok := cand.(GenAlone); ok && (sc.Mode != ModePlain || sc.FDB > 1 || sc.PortCount > 2) {
		return fmt.Errorf("%w: the generator alone has no switch to scale", ErrUnsupported)
	}
	t, err := BuildTopo(ctx, cl, sc, cand.Direct())
	if err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	port := uint16(benchPort)
	if sc.Mode == ModeEncap {
		port = vxlanPort
	}
	sink, err := NewSink(port)
	if err != nil {
		return err
	}
	cl.Push("sink", sink.Close)
	if err := sink.Attach(t.Sink, t.SinkDev, cl); err != nil {
		return err
	}
	sw, err := cand.Start(ctx, t, env, cl)
	if err != nil {
		return err
	}
	frame, err := t.GenFrame()
	if err != nil {
		return err
	}
	gen, err := NewGenerator(t.Gen, t.GenDev, frame)
	if err != nil {
		return err
	}
	cl.Push("generator", gen.Close)
	gen.CPU = opt.GenCPU

	// Teach the switch where the destination lives, and (FDB runs) every
	// source and destination MAC, before anything is measured.
	if !cand.Direct() {
		if err := learn(ctx, t, opt); err != nil {
			return fmt.Errorf("learning: %w", err)
		}
	}
	if sc.FDB > 1 {
		gen.SetMACs(macPairs(sc.FDB))
		if _, err := gen.Send(ctx, opt.LearnRate, uint64(sc.FDB)); err != nil {
			return fmt.Errorf("learning the sources: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	m := &meter{t: t, sw: sw, sink: sink, gen: gen, quiet: opt.QuietWait}
	settled, err := m.settle(ctx)
	if err != nil {
		return fmt.Errorf("settling: %w", err)
	}
	if settled > time.Second {
		env.logf("  the switch took %v to deliver everything at a low rate", settled.Round(100*time.Millisecond))
	}
	if !opt.SkipMax {
		if res.Max, err = m.phase(ctx, 0, opt.Warmup, opt.Window); err != nil {
			return fmt.Errorf("full speed: %w", err)
		}
		env.logf("  max: offered %.0f/s delivered %.0f/s loss %.2f%%", res.Max.OfferedPPS, res.Max.DeliveredPPS, 100*res.Max.LossRatio())
		if res.Max.Delivered == 0 {
			return fmt.Errorf("delivered nothing (offered %d, counted drops %d)", res.Max.Offered, res.Max.Counted)
		}
		if opt.Load80 {
			rate := 0.8 * res.Max.DeliveredPPS
			if res.At80, err = m.pacedPhase(ctx, env, rate, opt.Warmup, opt.Window); err != nil {
				return fmt.Errorf("80%%: %w", err)
			}
			env.logf("  80%%: offered %.0f/s delivered %.0f/s lost %d", res.At80.OfferedPPS, res.At80.DeliveredPPS, res.At80.Lost())
		}
	}
	if opt.CPURate > 0 {
		if res.Fixed, err = m.pacedPhase(ctx, env, opt.CPURate, opt.Warmup, opt.CPUWindow); err != nil {
			return fmt.Errorf("fixed rate: %w", err)
		}
		env.logf("  fixed %.0f/s: delivered %.0f/s switch %v gen %v sys %v", opt.CPURate, res.Fixed.DeliveredPPS,
			res.Fixed.SwitchCPU, res.Fixed.GenCPU, res.Fixed.SysBusy)
		if res.Fixed.Delivered == 0 {
			return fmt.Errorf("delivered nothing at the fixed rate (offered %d, counted drops %d)", res.Fixed.Offered, res.Fixed.Counted)
		}
	}
	if sw.Detail != nil {
		res.Detail = sw.Detail(ctx)
	}
	if sw.PID > 0 {
		if mem, err := procMemory(sw.PID); err == nil {
			res.Memory = &mem
		}
	}
	return nil
}

// learn sends frames from the sink side: a few from the sink's own MAC, and
// for FDB runs one from each of the destination MACs the generator will
// use, then gives the switch a moment to apply them.
func learn(ctx context.Context, t *Topo, opt Options) error {
	dev, ns, frame, err := t.LearnFrame()
	if err != nil {
		return err
	}
	l, err := NewGenerator(ns, dev, frame)
	if err != nil {
		return err
	}
	defer l.Close()
	if _, err := l.Send(ctx, 1000, 3); err != nil {
		return err
	}
	if t.FDB > 1 {
		l.SetMACs(learnPairs(t.FDB, t.GenMAC))
		if _, err := l.Send(ctx, opt.LearnRate, uint64(t.FDB)); err != nil {
			return err
		}
	}
	time.Sleep(300 * time.Millisecond)
	return nil
}

type meter struct {
	quiet time.Duration
	t     *Topo
	sw    *Running
	sink  *Sink
	gen   *Generator
}

type sample struct {
	at              time.Time
	offered         uint64
	delivered       uint64
	bytes           uint64
	switchCPU       time.Duration
	genCPU          time.Duration
	softirqd        time.Duration
	sys             SysCPU
	swErr, genErr   error
	sysErr, sinkErr error
}

func (m *meter) sample(gtid int) sample {
	s := sample{at: time.Now(), offered: m.gen.Offered()}
	s.delivered, s.bytes, s.sinkErr = m.sink.Count()
	if m.sw.PID > 0 {
		s.switchCPU, s.swErr = procCPU(m.sw.PID)
	}
	if gtid > 0 {
		s.genCPU, s.genErr = threadCPU(os.Getpid(), gtid)
	}
	s.softirqd = softirqdCPU()
	s.sys, s.sysErr = readSysCPU()
	return s
}

// drops sums what the switch reports and what the devices on the path
// report.
func (m *meter) drops(ctx context.Context) (uint64, error) {
	d, err := deviceDrops(ctx, m.t.PathDevices())
	if err != nil {
		return 0, err
	}
	s, err := m.sw.Drops(ctx)
	return d + s, err
}

// waitQuiet waits, at most limit, until the machine's busy time that is
// not the harness's own stays below threshold cores for half a second.
// Other builds and tests on a shared machine come in bursts; starting a
// run between them keeps them out of more measurements. It returns the
// last load seen and how long it waited.
func waitQuiet(ctx context.Context, threshold float64, limit time.Duration) (float64, time.Duration) {
	start := time.Now()
	var load float64
	for time.Since(start) < limit && ctx.Err() == nil {
		s0, err0 := readSysCPU()
		p0, err1 := procCPU(os.Getpid())
		t0 := time.Now()
		time.Sleep(500 * time.Millisecond)
		s1, err2 := readSysCPU()
		p1, err3 := procCPU(os.Getpid())
		if err0 != nil || err1 != nil || err2 != nil || err3 != nil {
			return 0, time.Since(start)
		}
		load = (s1.Busy() - s0.Busy() - (p1 - p0)).Seconds() / time.Since(t0).Seconds()
		if load < threshold {
			break
		}
	}
	return load, time.Since(start)
}

// settle sends short bursts at a low rate until two in a row arrive
// complete: a switch that is still setting up (OVS reassigning its PMD
// queues after ports were added) would otherwise lose frames in the first
// measured phase. It gives up after 15 s and lets the phases show it.
func (m *meter) settle(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	good := 0
	for good < 2 && time.Since(start) < 15*time.Second {
		before, _, err := m.sink.Count()
		if err != nil {
			return 0, err
		}
		sent, err := m.gen.Send(ctx, 20000, 2000)
		if err != nil {
			return 0, err
		}
		time.Sleep(100 * time.Millisecond)
		after, _, err := m.sink.Count()
		if err != nil {
			return 0, err
		}
		if after-before == sent {
			good++
		} else {
			good = 0
		}
	}
	return time.Since(start), nil
}

// pacedPhase is phase at a set rate, run again (at most twice more) when
// the generator could not offer 90% of the rate: on a shared machine its
// CPU is sometimes taken by others, and a measurement of the switch at a
// load it was never offered says nothing.
func (m *meter) pacedPhase(ctx context.Context, env *Env, rate float64, warmup, window time.Duration) (*Phase, error) {
	var p *Phase
	var err error
	for try := 0; try < 3; try++ {
		if p, err = m.phase(ctx, rate, warmup, window); err != nil {
			return nil, err
		}
		p.Retries = try
		if p.OfferedPPS >= 0.9*rate {
			break
		}
		env.logf("  the generator offered %.0f/s of %.0f/s (starved of CPU?): again", p.OfferedPPS, rate)
		waitQuiet(ctx, 0.3, m.quiet)
	}
	return p, nil
}

// phase runs the generator at rate for warmup+window and measures.
func (m *meter) phase(ctx context.Context, rate float64, warmup, window time.Duration) (*Phase, error) {
	drops0, err := m.drops(ctx)
	if err != nil {
		return nil, fmt.Errorf("drop counters: %w", err)
	}
	off0 := m.gen.Offered()
	del0, _, err := m.sink.Count()
	if err != nil {
		return nil, err
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type sendResult struct{ err error }
	sent := make(chan sendResult, 1)
	go func() {
		_, err := m.gen.Send(gctx, rate, 0)
		sent <- sendResult{err}
	}()
	wait := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case r := <-sent:
			if r.err == nil {
				r.err = errors.New("generator stopped early")
			}
			sent <- r
			return r.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(warmup); err != nil {
		return nil, err
	}
	gtid := m.gen.ThreadID()
	s0 := m.sample(gtid)
	if err := wait(window); err != nil {
		return nil, err
	}
	s1 := m.sample(gtid)
	cancel()
	r := <-sent
	if r.err != nil {
		return nil, r.err
	}
	for _, e := range []error{s0.sinkErr, s1.sinkErr, s0.swErr, s1.swErr, s0.sysErr, s1.sysErr} {
		if e != nil {
			return nil, e
		}
	}
	// Let the last frames arrive: the sink's count stops moving.
	del1 := s1.delivered
	deadline := time.Now().Add(3 * time.Second)
	for stable := 0; stable < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		n, _, err := m.sink.Count()
		if err != nil {
			return nil, err
		}
		if n == del1 {
			stable++
		} else {
			stable = 0
		}
		del1 = n
	}
	drops1, err := m.drops(ctx)
	if err != nil {
		return nil, fmt.Errorf("drop counters: %w", err)
	}
	dt := s1.at.Sub(s0.at)
	secs := dt.Seconds()
	p := &Phase{
		Rate:         rate,
		OfferedPPS:   float64(s1.offered-s0.offered) / secs,
		DeliveredPPS: float64(s1.delivered-s0.delivered) / secs,
		DeliveredBPS: 8 * float64(s1.bytes-s0.bytes) / secs,
		Offered:      m.gen.Offered() - off0,
		Delivered:    del1 - del0,
		Counted:      drops1 - drops0,
		SwitchCPU:    s1.switchCPU - s0.switchCPU,
		SoftirqdCPU:  s1.softirqd - s0.softirqd,
		SysBusy:      s1.sys.Busy() - s0.sys.Busy(),
		SysKernel:    s1.sys.Kernel() - s0.sys.Kernel(),
		WindowFrames: s1.delivered - s0.delivered,
		WindowTime:   dt,
	}
	if s0.genErr == nil && s1.genErr == nil {
		p.GenCPU = s1.genCPU - s0.genCPU
	}
	return p, nil
}

// softirqdCPU sums the CPU time of the ksoftirqd threads, where softirq
// work goes when it is deferred from the context that raised it.
func softirqdCPU() time.Duration {
	var sum time.Duration
	for _, pid := range softirqdPIDs() {
		if d, err := procCPU(pid); err == nil {
			sum += d
		}
	}
	return sum
}

var softirqdCache []int

func softirqdPIDs() []int {
	if softirqdCache != nil {
		return softirqdCache
	}
	ents, _ := os.ReadDir("/proc")
	pids := []int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.HasPrefix(string(b), "ksoftirqd/") {
			pids = append(pids, pid)
		}
	}
	softirqdCache = pids
	return pids
}
