package afxdp

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func TestUmemConfigValidation(t *testing.T) {
	ok := DefaultUmemConfig()
	if err := ok.validate(); err != nil {
		t.Fatalf("default config rejected: %v", err)
	}
	cases := []struct {
		name string
		edit func(*UmemConfig)
		want string
	}{
		{"zero frames", func(c *UmemConfig) { c.NumFrames = 0 }, "NumFrames 0"},
		{"negative frames", func(c *UmemConfig) { c.NumFrames = -5 }, "NumFrames -5"},
		{"frame size not power of two", func(c *UmemConfig) { c.FrameSize = 3000 }, "FrameSize 3000"},
		{"frame size too small", func(c *UmemConfig) { c.FrameSize = 1024 }, "FrameSize 1024"},
		{"frame size above page", func(c *UmemConfig) { c.FrameSize = 1 << 20 }, "FrameSize 1048576"},
		{"negative headroom", func(c *UmemConfig) { c.Headroom = -1 }, "Headroom -1"},
		{"headroom eats frame", func(c *UmemConfig) { c.Headroom = 2048 - 256 }, "Headroom 1792"},
		{"fill ring not power of two", func(c *UmemConfig) { c.FillRingSize = 1000 }, "FillRingSize 1000"},
		{"fill ring zero", func(c *UmemConfig) { c.FillRingSize = 0 }, "FillRingSize 0"},
		{"completion ring not power of two", func(c *UmemConfig) { c.CompletionRingSize = 3 }, "CompletionRingSize 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultUmemConfig()
			tc.edit(&cfg)
			u, err := NewUmem(cfg)
			if err == nil {
				u.Close()
				t.Fatalf("NewUmem(%+v) succeeded, want error", cfg)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "afxdp: umem config: ") {
				t.Fatalf("error %q does not name the problem %q", err, tc.want)
			}
		})
	}
}

func TestSocketConfigValidation(t *testing.T) {
	u, err := NewUmem(UmemConfig{NumFrames: 16, FrameSize: 4096, FillRingSize: 8, CompletionRingSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	good := SocketConfig{Ifindex: 1, Queue: 0, RxRingSize: 8, TxRingSize: 8}
	cases := []struct {
		name string
		edit func(*SocketConfig)
		want string
	}{
		{"no rings", func(c *SocketConfig) { c.RxRingSize, c.TxRingSize = 0, 0 }, "need an rx ring"},
		{"rx not power of two", func(c *SocketConfig) { c.RxRingSize = 6 }, "RxRingSize 6"},
		{"tx not power of two", func(c *SocketConfig) { c.TxRingSize = 100 }, "TxRingSize 100"},
		{"negative rx", func(c *SocketConfig) { c.RxRingSize = -8 }, "RxRingSize -8"},
		{"bad ifindex", func(c *SocketConfig) { c.Ifindex = 0 }, "ifindex 0"},
		{"bad queue", func(c *SocketConfig) { c.Queue = -1 }, "queue -1"},
		{"bad mode", func(c *SocketConfig) { c.Mode = Mode(7) }, "Mode(7)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			s, err := u.NewSocket(cfg)
			if err == nil {
				s.Close()
				t.Fatalf("NewSocket(%+v) succeeded, want error", cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name the problem %q", err, tc.want)
			}
		})
	}
	if len(u.sockets) != 0 {
		t.Fatalf("rejected configs left %d sockets on the umem", len(u.sockets))
	}
}

func TestMode(t *testing.T) {
	for _, m := range []Mode{ModeAuto, ModeCopy, ModeZeroCopy} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Fatalf("ParseMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if s := ModeZeroCopy.String(); s != "zerocopy" {
		t.Fatalf("ModeZeroCopy.String() = %q", s)
	}
	if got, err := ParseMode(" Copy "); err != nil || got != ModeCopy {
		t.Fatalf("ParseMode(\" Copy \") = %v, %v", got, err)
	}
	if _, err := ParseMode("turbo"); err == nil {
		t.Fatal("ParseMode(\"turbo\") succeeded")
	}
}

func TestUmemAddressing(t *testing.T) {
	u, err := NewUmem(UmemConfig{NumFrames: 4, FrameSize: 2048, Headroom: 64, FillRingSize: 4, CompletionRingSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if u.NumFrames() != 4 || u.FrameSize() != 2048 || u.Headroom() != 64 {
		t.Fatalf("sizes: %d frames of %d, headroom %d", u.NumFrames(), u.FrameSize(), u.Headroom())
	}
	if a := u.FrameAddr(3); a != 3*2048 {
		t.Fatalf("FrameAddr(3) = %d", a)
	}
	for _, addr := range []uint64{2048, 2048 + 256, 4095} {
		if i := u.FrameIndex(addr); i != 1 {
			t.Fatalf("FrameIndex(%d) = %d, want 1", addr, i)
		}
	}
	// Bytes: inside a chunk, shared memory, capacity capped.
	b := u.Bytes(2048+256, 100)
	if len(b) != 100 || cap(b) != 100 {
		t.Fatalf("Bytes len %d cap %d", len(b), cap(b))
	}
	b[0] = 0xab
	if u.mem[2048+256] != 0xab {
		t.Fatal("Bytes does not share the UMEM memory")
	}
	if b := u.Bytes(2048, 2048); len(b) != 2048 {
		t.Fatalf("whole chunk: len %d", len(b))
	}
	for _, c := range []struct {
		addr uint64
		n    int
	}{{2048 + 2000, 49}, {2047, 2}, {4 * 2048, 1}, {1 << 40, 1}, {0, -1}} {
		if b := u.Bytes(c.addr, c.n); b != nil {
			t.Fatalf("Bytes(%d, %d) = %d bytes, want nil", c.addr, c.n, len(b))
		}
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if b := u.Bytes(0, 1); b != nil {
		t.Fatal("Bytes after Close returned memory")
	}
	if _, err := u.NewSocket(SocketConfig{Ifindex: 1, RxRingSize: 4}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("NewSocket on closed umem: %v", err)
	}
}

// TestUmemHugePages: where the kernel offers transparent huge pages (for
// every mapping, or for those that ask), the UMEM is in them.
func TestUmemHugePages(t *testing.T) {
	thp, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		t.Fatalf("this kernel has no transparent huge pages to ask for: %v", err)
	}
	offered := !strings.Contains(string(thp), "[never]")
	cfg := DefaultUmemConfig()
	cfg.NumFrames = 8192 // 16 MiB: several huge pages whatever the alignment
	u, err := NewUmem(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	huge := anonHugeKiB(t, uintptr(unsafe.Pointer(&u.mem[0])))
	t.Logf("transparent huge pages %q: UMEM has %d KiB in huge pages", strings.TrimSpace(string(thp)), huge)
	if offered && huge == 0 {
		t.Fatal("the kernel offers huge pages, the UMEM has none")
	}
}

// anonHugeKiB is the AnonHugePages of the mapping that starts at addr, from
// /proc/self/smaps.
func anonHugeKiB(t *testing.T, addr uintptr) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	start := fmt.Sprintf("%x-", addr)
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = strings.HasPrefix(line, start)
			continue
		}
		if v, ok := strings.CutPrefix(line, "AnonHugePages:"); ok && in {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			return kb
		}
	}
	t.Fatalf("no mapping at %#x in /proc/self/smaps", addr)
	return 0
}
