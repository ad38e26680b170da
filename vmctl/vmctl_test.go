package vmctl

import (
	"net"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:AB:cd:0f")
	tap, dev, nd := Names(mac)
	if tap != "xs525400abcd0f" || dev != "xs-525400abcd0f" || nd != "xsnd-525400abcd0f" {
		t.Fatalf("Names(%s) = %q %q %q", mac, tap, dev, nd)
	}
	if len(tap) > 15 {
		t.Fatalf("tap name %q is longer than IFNAMSIZ-1", tap)
	}
	back, ok := macFromDevice(dev)
	if !ok || back.String() != mac.String() {
		t.Fatalf("macFromDevice(%q) = %s %v", dev, back, ok)
	}
	for _, id := range []string{"xs-525400abcd0", "xs-525400ABCD0F", "xs-525400abcd0g", "nic1", "xsnd-525400abcd0f", "xs-525400abcd0f0"} {
		if m, ok := macFromDevice(id); ok {
			t.Errorf("macFromDevice(%q) = %s, want no MAC", id, m)
		}
	}
}

func TestRandomMAC(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		mac := RandomMAC()
		if err := checkMAC(mac); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(mac.String(), "52:54:00:") {
			t.Fatalf("random MAC %s is not in 52:54:00", mac)
		}
		seen[mac.String()] = true
	}
	if len(seen) < 95 {
		t.Fatalf("100 random MACs gave only %d different ones", len(seen))
	}
}

func TestCheckMAC(t *testing.T) {
	for _, s := range []string{"01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "00:00:00:00:fe:80:00:00"} {
		mac, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMAC(mac); err == nil {
			t.Errorf("checkMAC(%s) accepted it", s)
		}
	}
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	if err := checkMAC(mac); err != nil {
		t.Errorf("checkMAC(%s): %v", mac, err)
	}
}

func TestVMName(t *testing.T) {
	for socket, want := range map[string]string{
		"/run/vms/web1.qmp": "web1",
		"/tmp/qmp.sock":     "qmp",
		"vm":                "vm",
		"":                  "the VM",
	} {
		if got := vmName(socket); got != want {
			t.Errorf("vmName(%q) = %q, want %q", socket, got, want)
		}
	}
}
