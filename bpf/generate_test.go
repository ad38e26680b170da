package bpf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// generateLines returns the arguments after `go tool bpf2go` of each
// generate directive in gen.go, split like the go command splits them
// (spaces, with double-quoted arguments kept whole).
func generateLines(t *testing.T) [][]string {
	t.Helper()
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]string
	for _, line := range strings.Split(string(src), "\n") {
		rest, ok := strings.CutPrefix(line, "//go:generate ")
		if !ok {
			continue
		}
		args := splitArgs(t, rest)
		if len(args) < 3 || args[0] != "go" || args[1] != "tool" || args[2] != "bpf2go" {
			t.Fatalf("gen.go: %q is not a `go tool bpf2go` line", line)
		}
		lines = append(lines, args[3:])
	}
	if len(lines) == 0 {
		t.Fatal("gen.go has no go:generate lines")
	}
	return lines
}

func splitArgs(t *testing.T, s string) []string {
	t.Helper()
	var args []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				t.Fatalf("gen.go: unterminated quote in %q", s)
			}
			args = append(args, s[1:1+end])
			s = s[2+end:]
			continue
		}
		arg, rest, _ := strings.Cut(s, " ")
		args = append(args, arg)
		s = rest
	}
	return args
}

// TestGeneratedObjectsMatchSource rebuilds every program with the bpf2go
// invocations of gen.go (what `make generate` runs) and compares the result
// byte for byte with the committed objects and bindings: clang's output is
// reproducible, so a difference means someone changed the C without
// regenerating.
func TestGeneratedObjectsMatchSource(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Fatal("clang is needed to check the committed BPF objects; `make deps` installs it")
	}
	tool, err := exec.Command("go", "tool", "-n", "bpf2go").Output()
	if err != nil {
		t.Fatalf("find bpf2go: %v", err)
	}
	lines := generateLines(t)
	if len(lines) < 2 {
		t.Fatalf("gen.go builds %d programs, want port and uplink", len(lines))
	}
	for _, args := range lines {
		// The last two arguments are the identifier and the C source.
		ident, source := args[len(args)-2], args[len(args)-1]
		t.Run(ident, func(t *testing.T) {
			// Build from a copy of src/ at the same relative path as
			// go:generate uses, since the path ends up in the object's
			// debug info.
			dir := t.TempDir()
			if err := os.CopyFS(filepath.Join(dir, "src"), os.DirFS("src")); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(string(bytes.TrimSpace(tool)), append([]string{"-go-package", "bpf"}, args...)...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("bpf2go: %v\n%s", err, out)
			}
			for _, f := range []string{ident + "_bpfel.o", ident + "_bpfel.go"} {
				want, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s does not match %s: run `make generate` and commit the result", f, source)
				}
			}
		})
	}
}
