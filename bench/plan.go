package bench

import (
	"context"
	"fmt"
	"time"
)

// Plan is a whole benchmark: which candidates, which scenarios, how many
// rounds.
type Plan struct {
	Candidates []Candidate
	// Sizes are the frame sizes of the main comparison.
	Sizes []int
	// Rounds of the main comparison; each round runs every candidate once
	// per size, in an order rotated by one per round, so that drift in the
	// machine's load does not always hit the same candidate.
	Rounds int
	// CPUSize is the frame size of the fixed-rate (CPU) phase.
	CPUSize int
	// FDBSizes, PortCounts: the scaling runs (64-byte frames, the
	// candidates that have an FDB and ports). VXLAN adds encap and decap
	// runs. ScaleRounds is their number of rounds.
	FDBSizes   []int
	PortCounts []int
	// RuleCounts are the rules scaling runs (xdpswitchd only; none
	// matches the traffic); the main run is the point without rules.
	RuleCounts  []int
	VXLAN       bool
	ScaleRounds int
	Opt         Options
	// ScaleOpt is Opt for the scaling runs.
	ScaleOpt Options
}

// Step is one planned run.
type Step struct {
	Group     string // "main", "fdb", "ports", "rules", "vxlan"
	Candidate Candidate
	Scenario  Scenario
	Round     int
	Opt       Options
}

func rotate[T any](s []T, k int) []T {
	if len(s) == 0 {
		return s
	}
	k %= len(s)
	return append(append([]T{}, s[k:]...), s[:k]...)
}

// Steps lists the runs in order.
func (p Plan) Steps() []Step {
	var steps []Step
	for r := range p.Rounds {
		for _, size := range p.Sizes {
			for _, c := range rotate(p.Candidates, r) {
				opt := p.Opt
				if size != p.CPUSize {
					opt.CPURate = 0
				}
				steps = append(steps, Step{"main", c, Scenario{Mode: ModePlain, Size: size, PortCount: 2}, r, opt})
			}
		}
	}
	scaled := func(c Candidate) bool {
		switch c.(type) {
		case Daemon, Bridge, OVS:
			return true
		}
		return false
	}
	for r := range p.ScaleRounds {
		for _, n := range p.FDBSizes {
			for _, c := range rotate(p.Candidates, r) {
				if scaled(c) {
					steps = append(steps, Step{"fdb", c, Scenario{Mode: ModePlain, Size: p.CPUSize, FDB: n, PortCount: 2}, r, p.ScaleOpt})
				}
			}
		}
		for _, n := range p.PortCounts {
			for _, c := range rotate(p.Candidates, r) {
				if scaled(c) {
					steps = append(steps, Step{"ports", c, Scenario{Mode: ModePlain, Size: p.CPUSize, PortCount: n}, r, p.ScaleOpt})
				}
			}
		}
		for _, n := range p.RuleCounts {
			for _, c := range rotate(p.Candidates, r) {
				if _, ok := c.(Daemon); ok {
					steps = append(steps, Step{"rules", c, Scenario{Mode: ModePlain, Size: p.CPUSize, PortCount: 2, Rules: n}, r, p.ScaleOpt})
				}
			}
		}
		if p.VXLAN {
			for _, mode := range []string{ModeEncap, ModeDecap} {
				for _, c := range rotate(p.Candidates, r) {
					switch c.(type) {
					case Daemon, Bridge:
						steps = append(steps, Step{"vxlan", c, Scenario{Mode: mode, Size: p.CPUSize, PortCount: 1}, r, p.ScaleOpt})
					}
				}
			}
		}
	}
	return steps
}

// Execute runs every step, logging progress, until ctx ends. A step that
// fails is recorded with its error and the plan goes on.
func (p Plan) Execute(ctx context.Context, env *Env) []Result {
	steps := p.Steps()
	var out []Result
	start := time.Now()
	for i, s := range steps {
		if ctx.Err() != nil {
			break
		}
		env.logf("[%d/%d %s] %s round %d: %s (%v elapsed)", i+1, len(steps), s.Group, s.Candidate.Name(), s.Round+1,
			s.Scenario, time.Since(start).Round(time.Second))
		r := RunOne(ctx, env, s.Candidate, s.Scenario, s.Opt, s.Round)
		if r.Err != "" {
			env.logf("  %s: %s", map[bool]string{true: "skipped", false: "FAILED"}[r.Skipped], r.Err)
		}
		out = append(out, r)
	}
	return out
}

// String summarizes the plan.
func (p Plan) String() string {
	return fmt.Sprintf("%d candidates, sizes %v, %d rounds; scaling: fdb %v, ports %v, rules %v, vxlan %v, %d rounds",
		len(p.Candidates), p.Sizes, p.Rounds, p.FDBSizes, p.PortCounts, p.RuleCounts, p.VXLAN, p.ScaleRounds)
}
