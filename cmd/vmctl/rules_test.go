package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

func TestRules(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	if out := mustVmctl(t, a.Socket, "rules", "--network", "lan"); out != "network lan has no rules: everything is allowed\n" {
		t.Fatalf("rules without any:\n%s", out)
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(`default: deny
rules:
  - {action: allow, proto: icmp}
  - {action: allow, direction: in, proto: tcp, dst_ports: ["22", "8000-8080"], src: [10.0.0.0/8], comment: ssh and web}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	want := `#  RULE                                                                    MATCHES  PACKETS  BYTES
0  allow proto icmp                                                        0        0        0
1  allow in proto tcp src 10.0.0.0/8 dst_ports 22,8000-8080 # ssh and web  0        0        0
-  deny (default)                                                          0        0        0
`
	if out := mustVmctl(t, a.Socket, "rules", "--port", "tap0", "--set", file); out != want {
		t.Fatalf("rules --set:\n%s\nwant:\n%s", out, want)
	}
	out := mustVmctl(t, a.Socket, "rules", "--port", "tap0", "--json")
	wantJSON(t, out, api.Rules{
		Ruleset: &api.Ruleset{Default: "deny", Rules: []api.Rule{
			{Action: "allow", Proto: "icmp"},
			{Action: "allow", Direction: "in", Proto: "tcp", Src: []string{"10.0.0.0/8"}, DstPorts: []string{"22", "8000-8080"}, Comment: "ssh and web"},
		}},
		Counters: []api.RuleCounter{{}, {}},
	})
	if out := mustVmctl(t, a.Socket, "rules", "--port", "tap0", "--clear"); out != "port tap0 has no rules: everything is allowed\n" {
		t.Fatalf("rules --clear:\n%s", out)
	}

	// Problems are told before anything is sent, with their lines.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - {action: allow, proto: icmp, dst_ports: [22]}\n  - {action: maybe}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantFailure(t, a.Socket, exitFailure, []string{"rules", "--network", "lan", "--set", bad},
		"line 2", "proto icmp has no ports", "line 3", `"maybe" is not allow or deny`)
	wantFailure(t, a.Socket, exitUsage, []string{"rules"}, "give one of --network NET and --port PORT")
	wantFailure(t, a.Socket, exitUsage, []string{"rules", "--network", "lan", "--port", "tap0"}, "give one of")
	wantFailure(t, a.Socket, exitUsage, []string{"rules", "--network", "lan", "--set", file, "--clear"}, "exclude each other")
	wantFailure(t, a.Socket, exitFailure, []string{"rules", "--network", "nope"}, `no network "nope"`)
	wantFailure(t, a.Socket, exitFailure, []string{"rules", "--port", "tap0", "--set", filepath.Join(t.TempDir(), "missing.yaml")}, "no such file")
}
