package testnet

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proc is a program a test runs in the background (a daemon, a DHCP
// client): its output is kept for failure messages and can be waited on
// line by line, and it is killed at the test's end if it still runs.
type Proc struct {
	Cmd *exec.Cmd

	mu     sync.Mutex
	out    strings.Builder
	lines  []string
	next   int           // the first line WaitLine has not looked at
	notify chan struct{} // closed, and replaced, when a line comes or the process ends
	exited chan struct{}
}

// StartProc starts cmd with its stderr, and its stdout unless the caller
// set one, read into the Proc.
func StartProc(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, notify: make(chan struct{}), exited: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	if cmd.Stdout == nil {
		cmd.Stdout = pw
	}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatal(err)
	}
	pw.Close()
	go p.read(pr)
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *Proc) read(r io.ReadCloser) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.out.WriteString(sc.Text() + "\n")
		p.lines = append(p.lines, sc.Text())
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}
	r.Close()
	_ = p.Cmd.Wait()
	close(p.exited)
}

// Output is everything the program has printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Exited is closed once the program has ended and been reaped.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// WaitLine waits for the next line that contains s and returns it. It
// fails the test, with the output, when the program ends first or the
// timeout passes.
func (p *Proc) WaitLine(t testing.TB, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for p.next < len(p.lines) {
			l := p.lines[p.next]
			p.next++
			if strings.Contains(l, s) {
				p.mu.Unlock()
				return l
			}
		}
		notify := p.notify
		p.mu.Unlock()
		select {
		case <-notify:
		case <-p.exited:
			// Lines printed just before the end are read by now.
			p.mu.Lock()
			more := p.next < len(p.lines)
			p.mu.Unlock()
			if !more {
				t.Fatalf("%s ended without printing %q:\n%s", p.Cmd.Path, s, p.Output())
			}
		case <-deadline:
			t.Fatalf("%s printed no %q within %v:\n%s", p.Cmd.Path, s, timeout, p.Output())
		}
	}
}

// WaitExit waits for the program to end and returns its exit status; it
// fails the test after the timeout.
func (p *Proc) WaitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v:\n%s", p.Cmd.Path, timeout, p.Output())
		return -1
	}
}
