package bench

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plots writes the PNGs into dir and returns their file names.
func (r *Report) plots(dir string) ([]string, error) {
	var names []string
	var errs []error
	add := func(name string, p *plot.Plot, err error) {
		if err == nil && p != nil {
			err = p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return
		}
		if p != nil {
			names = append(names, name)
		}
	}
	p, err := r.barsBySize("Delivered at full speed", "Mpps", func(x Result) float64 {
		if x.Max == nil {
			return math.NaN()
		}
		return x.Max.DeliveredPPS / 1e6
	})
	add("throughput-pps.png", p, err)
	p, err = r.barsBySize("Delivered at full speed", "Gbit/s", func(x Result) float64 {
		if x.Max == nil {
			return math.NaN()
		}
		return x.Max.DeliveredBPS / 1e9
	})
	add("throughput-gbps.png", p, err)
	if r.CPURate > 0 {
		p, err = r.cpuBars()
		add("cpu-per-frame.png", p, err)
	}
	if len(r.plan.FDBSizes) > 0 {
		sc := func(n int) Scenario { return Scenario{Mode: ModePlain, Size: r.CPUSize, FDB: n, PortCount: 2} }
		p, err = r.lines("CPU per frame vs FDB size", "MACs per side", "Δ tasks ns/frame", r.plan.FDBSizes, sc, true, func(c string, s Scenario) float64 { return r.cpu(c, s).Tasks })
		add("fdb-cpu.png", p, err)
		p, err = r.lines("Full speed vs FDB size", "MACs per side", "Mpps", r.plan.FDBSizes, sc, true, func(c string, s Scenario) float64 { return r.med(c, s, maxPPS) / 1e6 })
		add("fdb-pps.png", p, err)
	}
	if len(r.plan.PortCounts) > 0 {
		sc := func(n int) Scenario { return Scenario{Mode: ModePlain, Size: r.CPUSize, PortCount: n} }
		p, err = r.lines("CPU per frame vs ports", "ports", "Δ tasks ns/frame", r.plan.PortCounts, sc, false, func(c string, s Scenario) float64 { return r.cpu(c, s).Tasks })
		add("ports-cpu.png", p, err)
		p, err = r.lines("Full speed vs ports", "ports", "Mpps", r.plan.PortCounts, sc, false, func(c string, s Scenario) float64 { return r.med(c, s, maxPPS) / 1e6 })
		add("ports-pps.png", p, err)
	}
	return names, errors.Join(errs...)
}

// barsBySize is a grouped bar chart: one group per frame size, one bar per
// candidate.
func (r *Report) barsBySize(title, unit string, f func(Result) float64) (*plot.Plot, error) {
	if len(r.plan.Sizes) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = unit
	p.X.Label.Text = "frame size (bytes, with FCS)"
	cands := r.candidates()
	w := vg.Points(14)
	for i, c := range cands {
		vals := make(plotter.Values, len(r.plan.Sizes))
		for j, size := range r.plan.Sizes {
			v := r.med(c, mainSc(size), f)
			if math.IsNaN(v) {
				v = 0
			}
			vals[j] = v
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = w * vg.Length(float64(i)-float64(len(cands)-1)/2)
		p.Add(bars)
		p.Legend.Add(c, bars)
	}
	labels := make([]string, len(r.plan.Sizes))
	for i, s := range r.plan.Sizes {
		labels[i] = fmt.Sprint(s)
	}
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.7, float64(len(labels)-1)+0.7
	p.Legend.Top = true
	p.Y.Max *= 1.35 // room for the legend
	return p, nil
}

func (r *Report) cpuBars() (*plot.Plot, error) {
	sc := mainSc(r.CPUSize)
	p := plot.New()
	p.Title.Text = fmt.Sprintf("CPU per forwarded frame at %.0f frames/s, %d-byte frames", r.CPURate, r.CPUSize)
	p.Y.Label.Text = "ns/frame"
	var labels []string
	var tasks, proc plotter.Values
	for _, c := range r.candidates() {
		if c == (GenAlone{}).Name() || len(r.ok(c, sc)) == 0 {
			continue
		}
		f := r.cpu(c, sc)
		labels = append(labels, c)
		tasks = append(tasks, nz(f.Tasks))
		proc = append(proc, nz(f.Switch))
	}
	if len(labels) == 0 {
		return nil, nil
	}
	w := vg.Points(18)
	b1, err := plotter.NewBarChart(tasks, w)
	if err != nil {
		return nil, err
	}
	b1.Color, b1.Offset, b1.LineStyle.Width = plotutil.Color(0), -w/2, 0
	b2, err := plotter.NewBarChart(proc, w)
	if err != nil {
		return nil, err
	}
	b2.Color, b2.Offset, b2.LineStyle.Width = plotutil.Color(1), w/2, 0
	p.Add(b1, b2)
	p.Legend.Add("Δ tasks vs generator alone", b1)
	p.Legend.Add("switch (process, or kernel time Δ)", b2)
	p.Legend.Top = true
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.7, float64(len(labels)-1)+0.7
	p.Y.Max += (p.Y.Max - p.Y.Min) * 0.3 // room for the legend
	return p, nil
}

func nz(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

func (r *Report) lines(title, xl, yl string, points []int, sc func(int) Scenario, logX bool, f func(string, Scenario) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xl
	p.Y.Label.Text = yl
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	i := 0
	for _, c := range r.scaled() {
		var xys plotter.XYs
		for _, n := range points {
			v := f(c, sc(n))
			if math.IsNaN(v) {
				continue
			}
			xys = append(xys, plotter.XY{X: float64(max(n, 1)), Y: v})
		}
		if len(xys) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, err
		}
		l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		p.Legend.Add(c, l, pts)
		i++
	}
	if i == 0 {
		return nil, nil
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	p.Y.Max += (p.Y.Max - p.Y.Min) * 0.3 // room for the legend
	return p, nil
}
