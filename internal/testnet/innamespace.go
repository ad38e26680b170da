package testnet

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

const childEnv = "XDPSWITCH_TEST_NETNS"

// InNamespace runs the calling test in a network namespace of its own, for
// tests of code that changes the host it runs on (host ports with gateway
// addresses, NAT rules, forwarding sysctls): the test binary runs again
// inside a fresh namespace, only for this test. It returns true in that
// child, where the test goes on; in the parent it waits for the child,
// passes on its output and result, and returns false.
//
//	if !testnet.InNamespace(t) {
//		return
//	}
func InNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	ns := NewNS(t)
	args := []string{"netns", "exec", ns.Name, os.Args[0],
		"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.v", "-test.count=1"}
	if dl, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(dl).Round(time.Second).String())
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", ns.Name, out)
	if err != nil {
		t.Fatalf("test failed in namespace %s: %v", ns.Name, err)
	}
	return false
}
