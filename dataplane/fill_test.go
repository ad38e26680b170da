package dataplane

import (
	"testing"

	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
)

// fillTo plays refill for p: it takes what want asks for.
func fillTo(f *fillShare, p *loopPort) {
	if n := f.want(p); n > 0 {
		f.held(p, n)
	}
}

// receive plays a port receiving n frames and being refilled.
func receiveFill(f *fillShare, p *loopPort, n int) {
	n = min(n, p.fillHeld)
	f.held(p, -n)
	p.rxWindow += n
	fillTo(f, p)
}

func checkExtra(t *testing.T, f *fillShare, ports []*loopPort) {
	t.Helper()
	sum := 0
	for _, p := range ports {
		sum += max(0, p.fillHeld-f.base)
		if p.fillHeld > f.max {
			t.Fatalf("a port holds %d frames, more than its ring's %d", p.fillHeld, f.max)
		}
	}
	if sum != f.extra {
		t.Fatalf("ports hold %d frames beyond their base shares, the share counted %d", sum, f.extra)
	}
	if f.extra > f.burst {
		t.Fatalf("ports hold %d burst frames, more than the pool's %d", f.extra, f.burst)
	}
}

// TestFillShareBusyPortGrows: a port receiving at a high rate holds far
// more than its base share; an idle one only its base share.
func TestFillShareBusyPortGrows(t *testing.T) {
	f := newFillShare(128, 2048, 16384)
	busy, idle := &loopPort{}, &loopPort{}
	ports := []*loopPort{busy, idle}
	for _, p := range ports {
		fillTo(&f, p)
	}
	if busy.fillHeld != 128 || idle.fillHeld != 128 {
		t.Fatalf("base shares: %d and %d, want 128", busy.fillHeld, idle.fillHeld)
	}
	// 500 frames a millisecond, for a few milliseconds.
	for range 5 {
		for range 10 {
			receiveFill(&f, busy, 50)
		}
		f.update(ports, rateWindow)
		fillTo(&f, busy)
		fillTo(&f, idle)
		checkExtra(t, &f, ports)
	}
	if busy.fillHeld < 1500 {
		t.Errorf("busy port holds %d frames, want its ring nearly full", busy.fillHeld)
	}
	if idle.fillHeld != 128 {
		t.Errorf("idle port holds %d frames, want its base share", idle.fillHeld)
	}
	// The traffic stops: the port keeps what it holds (a fill ring gives
	// nothing back without receiving) but is no longer topped up beyond
	// its base share once its rate has faded.
	for range 40 {
		f.update(ports, rateWindow)
	}
	if busy.extra != 0 {
		t.Errorf("after 40 quiet windows the port may still take %d burst frames", busy.extra)
	}
	receiveFill(&f, busy, busy.fillHeld)
	if busy.fillHeld != 128 {
		t.Errorf("refilled after the lull: %d frames, want the base share", busy.fillHeld)
	}
	checkExtra(t, &f, ports)
}

// TestFillShareHoardingBounded: ports that were busy and went idle keep
// their burst frames, but together never more than the pool, so every
// port the switch admits still gets its base share and the reserve stays
// untouched.
func TestFillShareHoardingBounded(t *testing.T) {
	const frames = 16384
	cfg := Config{Umem: afxdpDefaultUmem(frames), FillFrames: 128}
	f := newFillShare(cfg.FillFrames, 2048, frames)
	var ports []*loopPort
	for range cfg.maxPorts() {
		ports = append(ports, &loopPort{})
	}
	// One port after the other is busy for a while and goes idle.
	for _, p := range ports[:20] {
		fillTo(&f, p)
		for range 5 {
			for range 10 {
				receiveFill(&f, p, 64)
			}
			f.update(ports, rateWindow)
			for _, q := range ports {
				fillTo(&f, q)
			}
			checkExtra(t, &f, ports)
		}
	}
	for _, p := range ports {
		fillTo(&f, p)
	}
	held := 0
	for _, p := range ports {
		if p.fillHeld < f.base {
			t.Fatalf("a port holds %d frames, less than its base share", p.fillHeld)
		}
		held += p.fillHeld
	}
	if free := frames - held; free < reserveFrames(frames) {
		t.Errorf("fill rings hold %d of %d frames, leaving %d, less than the reserve %d", held, frames, free, reserveFrames(frames))
	}
	checkExtra(t, &f, ports)
}

// TestFillShareSplitByRate: busy ports that want more than the pool share
// it in proportion to their rates.
func TestFillShareSplitByRate(t *testing.T) {
	f := newFillShare(32, 2048, 2048) // a pool of 256
	fast, slow := &loopPort{}, &loopPort{}
	ports := []*loopPort{fast, slow}
	for range 20 {
		for range 10 {
			receiveFill(&f, fast, 30)
			receiveFill(&f, slow, 10)
		}
		f.update(ports, rateWindow)
		fillTo(&f, fast)
		fillTo(&f, slow)
		checkExtra(t, &f, ports)
	}
	if fast.extra+slow.extra > f.burst || fast.extra < 2*slow.extra {
		t.Errorf("parts of a pool of %d: fast %d, slow %d; want them within the pool, in proportion to 3:1", f.burst, fast.extra, slow.extra)
	}
}

func afxdpDefaultUmem(frames int) afxdp.UmemConfig {
	u := afxdp.DefaultUmemConfig()
	u.NumFrames = frames
	return u
}
