package bench

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The benchmark's XDP programs are a handful of instructions each, so they
// are assembled here with cilium/ebpf's asm package: no clang at run time,
// no generated objects to keep in step, and no code shared with the
// switch's own programs in bpf/.

const (
	xdpDrop = 1
	xdpPass = 2
)

// Sink counts the frames the benchmark generator sent (IPv4, no options,
// UDP to Port) and drops them, exactly, in XDP on the sink's device: the
// count is taken before anything in the sink could lose a frame. Every
// other frame (ARP, the learner's frames) goes on to the kernel.
type Sink struct {
	Port   uint16
	prog   *ebpf.Program
	counts *ebpf.Map // per-CPU {packets, bytes}
	ns     *NS
	dev    string
}

// NewSink loads the counting program; Attach puts it on a device.
func NewSink(port uint16) (*Sink, error) {
	counts, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "xsb_sink",
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  16,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("sink map: %w", err)
	}
	be := func(v uint16) int32 { return int32(v>>8 | (v&0xff)<<8) } // a big-endian u16 as a little-endian load sees it
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 38),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, be(0x0800), "pass"),
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte),
		asm.JNE.Imm(asm.R5, 0x45, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 23, asm.Byte),
		asm.JNE.Imm(asm.R5, unix.IPPROTO_UDP, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 36, asm.Half),
		asm.JNE.Imm(asm.R5, be(port), "pass"),
		asm.Mov.Reg(asm.R7, asm.R3),
		asm.Sub.Reg(asm.R7, asm.R2), // frame length, kept across the call
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, 8, asm.DWord),
		asm.Add.Reg(asm.R1, asm.R7),
		asm.StoreMem(asm.R0, 8, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "xsb_sink",
		Type:         ebpf.XDP,
		Instructions: insns,
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		counts.Close()
		return nil, fmt.Errorf("sink program: %w", err)
	}
	return &Sink{Port: port, prog: prog, counts: counts}, nil
}

// Attach puts the program on dev in ns (native XDP) and pushes its removal.
func (s *Sink) Attach(ns *NS, dev string, cl *Cleanup) error {
	if err := attachXDP(ns, dev, s.prog); err != nil {
		return err
	}
	s.ns, s.dev = ns, dev
	cl.Push("sink program on "+dev, func() error { return detachXDP(ns, dev) })
	return nil
}

// Count returns the frames and bytes counted so far, over all CPUs.
func (s *Sink) Count() (packets, bytes uint64, err error) {
	var per [][2]uint64
	if err := s.counts.Lookup(uint32(0), &per); err != nil {
		return 0, 0, err
	}
	for _, v := range per {
		packets += v[0]
		bytes += v[1]
	}
	return packets, bytes, nil
}

// Close frees the program and its map (the device keeps nothing once
// detached).
func (s *Sink) Close() error {
	return errors.Join(s.prog.Close(), s.counts.Close())
}

// Devmap is the kernel's XDP forwarding upper bound: an XDP program on the
// ingress port that redirects every frame through a DEVMAP to the egress
// port, with no lookup at all.
type Devmap struct {
	prog *ebpf.Program
	m    *ebpf.Map
}

// NewDevmap loads the redirect program; slot 0 of its map is the egress.
func NewDevmap() (*Devmap, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "xsb_devmap",
		Type:       ebpf.DevMap,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("devmap: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "xsb_redirect",
		Type: ebpf.XDP,
		Instructions: asm.Instructions{
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnRedirectMap.Call(),
			asm.Return(),
		},
		License: "Dual BSD/GPL",
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("devmap program: %w", err)
	}
	return &Devmap{prog: prog, m: m}, nil
}

// Wire sets the egress and attaches the program to the ingress, both in ns.
func (d *Devmap) Wire(ns *NS, in, out string, cl *Cleanup) error {
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(out)
		if err != nil {
			return err
		}
		// The devmap resolves the ifindex in this thread's namespace.
		return d.m.Put(uint32(0), uint32(l.Attrs().Index))
	})
	if err != nil {
		return fmt.Errorf("devmap egress %s: %w", out, err)
	}
	if err := attachXDP(ns, in, d.prog); err != nil {
		return err
	}
	cl.Push("devmap program on "+in, func() error { return detachXDP(ns, in) })
	return nil
}

// Close frees the program and map.
func (d *Devmap) Close() error { return errors.Join(d.prog.Close(), d.m.Close()) }

func attachXDP(ns *NS, dev string, prog *ebpf.Program) error {
	return ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetXdpFdWithFlags(l, prog.FD(), unix.XDP_FLAGS_DRV_MODE); err != nil {
			return fmt.Errorf("attach XDP to %s: %w", dev, err)
		}
		return nil
	})
}

func detachXDP(ns *NS, dev string) error {
	return ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return nil // gone with its namespace
		}
		return netlink.LinkSetXdpFdWithFlags(l, -1, unix.XDP_FLAGS_DRV_MODE)
	})
}
