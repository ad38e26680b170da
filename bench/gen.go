package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/asavie/xdp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Generator sends frames from one device with an AF_XDP socket
// (github.com/asavie/xdp, an implementation independent of the switch's
// own afxdp package). Its UMEM holds prebuilt frames that are sent in
// turn; only the MAC addresses are rewritten per frame when a MAC table is
// given (FDB scaling). Offered load is what the kernel took from the tx
// ring and completed: a frame a veth could not hand to its peer is still
// completed, and counted by the veth as a drop.
type Generator struct {
	xsk       *xdp.Socket
	numFrames int
	frameSize int
	lens      []uint32
	umemBase  []byte // frame i is umemBase[i*frameSize:]

	// macs, when set, are written over bytes 0..11 (destination, source)
	// of the frame that carries sequence number s: macs[s%len(macs)].
	macs [][12]byte

	// CPU pins the sending thread; -1 leaves it to the scheduler.
	CPU int

	submitted, completed atomic.Uint64
	tid                  atomic.Int64
}

const (
	genFrames    = 4096
	genFrameSize = 2048
	genTxRing    = 2048
	genBatch     = 64
)

// NewGenerator binds a transmit-only AF_XDP socket to queue 0 of dev in ns
// and fills its UMEM with frame (wire bytes, FCS excluded).
func NewGenerator(ns *NS, dev string, frame []byte) (*Generator, error) {
	if len(frame) > genFrameSize {
		return nil, fmt.Errorf("generator: frame of %d bytes", len(frame))
	}
	g := &Generator{numFrames: genFrames, frameSize: genFrameSize, CPU: -1}
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		xsk, err := xdp.NewSocket(l.Attrs().Index, 0, &xdp.SocketOptions{
			NumFrames:              genFrames,
			FrameSize:              genFrameSize,
			FillRingNumDescs:       64,
			CompletionRingNumDescs: genFrames,
			RxRingNumDescs:         0,
			TxRingNumDescs:         genTxRing,
		})
		if err != nil {
			return fmt.Errorf("AF_XDP socket on %s: %w", dev, err)
		}
		g.xsk = xsk
		return nil
	})
	if err != nil {
		return nil, err
	}
	g.lens = make([]uint32, genFrames)
	for i := range genFrames {
		buf := g.xsk.GetFrame(xdp.Desc{Addr: uint64(i * genFrameSize), Len: genFrameSize})
		copy(buf, frame)
		g.lens[i] = uint32(len(frame))
	}
	g.umemBase = g.xsk.GetFrame(xdp.Desc{Addr: 0, Len: uint32(genFrames * genFrameSize)})
	return g, nil
}

// SetMACs makes the generator cycle through destination/source MAC pairs,
// one per frame.
func (g *Generator) SetMACs(pairs [][12]byte) { g.macs = pairs }

// Offered is the number of frames the kernel has completed so far.
func (g *Generator) Offered() uint64 { return g.completed.Load() }

// ThreadID is the sending thread's id while Send runs (for its CPU time).
func (g *Generator) ThreadID() int { return int(g.tid.Load()) }

// Send transmits at rate frames per second (0: as fast as the kernel takes
// them) until ctx ends or count frames (0: no limit) were sent, then waits
// a bounded time for the last frames to complete. It returns the frames
// sent by this call.
func (g *Generator) Send(ctx context.Context, rate float64, count uint64) (sent uint64, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		g.tid.Store(int64(unix.Gettid()))
		if g.CPU >= 0 {
			var set unix.CPUSet
			set.Set(g.CPU)
			_ = unix.SchedSetaffinity(0, &set)
			defer func() {
				// Give the thread back to every CPU before unlocking it.
				var all unix.CPUSet
				for c := range runtime.NumCPU() {
					all.Set(c)
				}
				_ = unix.SchedSetaffinity(0, &all)
			}()
		}
		sent, err = g.send(ctx, rate, count)
	}()
	<-done
	return sent, err
}

func (g *Generator) send(ctx context.Context, rate float64, count uint64) (uint64, error) {
	start := time.Now()
	base := g.submitted.Load()
	descs := make([]xdp.Desc, 0, genBatch)
	var loopErr error
	debug := os.Getenv("XSBENCH_DEBUG") != ""
	lastDebug := time.Now()
	for ctx.Err() == nil {
		if debug && time.Since(lastDebug) > 250*time.Millisecond {
			lastDebug = time.Now()
			fmt.Fprintf(os.Stderr, "gen: rate %.0f sub %d comp %d txfree %d mine %d elapsed %v\n", rate, g.submitted.Load(), g.completed.Load(), g.xsk.NumFreeTxSlots(), g.submitted.Load()-base, time.Since(start))
		}
		mine := g.submitted.Load() - base
		if count > 0 && mine >= count {
			break
		}
		g.reap()
		inflight := int(g.submitted.Load() - g.completed.Load())
		budget := min(genBatch, g.xsk.NumFreeTxSlots(), g.numFrames-inflight)
		if count > 0 {
			budget = min(budget, int(count-mine))
		}
		if rate > 0 {
			due := int64(rate*time.Since(start).Seconds()) - int64(mine)
			if due <= 0 {
				// Sleep until about the next frame is due, in steps coarse
				// enough that the sleeping costs little.
				wait := time.Duration(float64(time.Second) * (1 - float64(due)) / rate)
				time.Sleep(min(max(wait, 200*time.Microsecond), 2*time.Millisecond))
				continue
			}
			budget = min(budget, int(due))
		}
		if budget <= 0 {
			// The rings are full: kick the kernel to make room.
			if err := g.transmit(nil); err != nil {
				loopErr = err
				break
			}
			continue
		}
		descs = descs[:0]
		seq := g.submitted.Load()
		for i := range budget {
			idx := int((seq + uint64(i)) % uint64(g.numFrames))
			if g.macs != nil {
				pair := &g.macs[(seq+uint64(i))%uint64(len(g.macs))]
				copy(g.umemBase[idx*g.frameSize:], pair[:])
			}
			descs = append(descs, xdp.Desc{Addr: uint64(idx * g.frameSize), Len: g.lens[idx]})
		}
		if err := g.transmitCounted(descs); err != nil {
			loopErr = err
			break
		}
	}
	// Let what is in the ring go out, within a bound.
	deadline := time.Now().Add(2 * time.Second)
	for g.completed.Load() < g.submitted.Load() && time.Now().Before(deadline) {
		if err := g.transmit(nil); err != nil && loopErr == nil {
			loopErr = err
		}
		g.reap()
		if g.completed.Load() < g.submitted.Load() {
			time.Sleep(100 * time.Microsecond)
		}
	}
	g.reap()
	return g.submitted.Load() - base, loopErr
}

// transmitCounted puts descs on the tx ring, kicks the kernel and counts
// what went onto the ring.
func (g *Generator) transmitCounted(descs []xdp.Desc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("AF_XDP transmit: %v", r)
		}
	}()
	n := g.xsk.Transmit(descs)
	g.submitted.Add(uint64(n))
	return nil
}

// transmit kicks the kernel. asavie/xdp panics on an unexpected sendto
// error; that is turned into an error here.
func (g *Generator) transmit(descs []xdp.Desc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("AF_XDP transmit: %v", r)
		}
	}()
	g.xsk.Transmit(descs)
	return nil
}

// reap takes completed descriptors off the completion ring. Copy-mode
// completions come back in the order the frames were sent, so a count is
// all the generator needs to know which frames are free again.
func (g *Generator) reap() {
	if n := g.xsk.NumCompleted(); n > 0 {
		g.xsk.Complete(n)
		g.completed.Add(uint64(n))
	}
}

// Close closes the socket and frees its UMEM.
func (g *Generator) Close() error {
	if g.xsk == nil {
		return nil
	}
	err := g.xsk.Close()
	g.xsk = nil
	return err
}
