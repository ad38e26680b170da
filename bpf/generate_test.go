package bpf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedObjectsMatchSource rebuilds the programs with the same
// bpf2go invocation as `make generate` and compares the result byte for
// byte with the committed objects: clang's output is reproducible, so a
// difference means someone changed the C without regenerating.
func TestGeneratedObjectsMatchSource(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Fatal("clang is needed to check the committed BPF objects; `make deps` installs it")
	}
	// Build from a copy of src/ at the same relative path as go:generate
	// uses, since the path ends up in the object's debug info.
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "src"), os.DirFS("src")); err != nil {
		t.Fatal(err)
	}
	tool, err := exec.Command("go", "tool", "-n", "bpf2go").Output()
	if err != nil {
		t.Fatalf("find bpf2go: %v", err)
	}
	cmd := exec.Command(string(bytes.TrimSpace(tool)), "-go-package", "bpf",
		"-tags", "linux", "-target", "bpfel", "-cflags", "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu",
		"port", "src/port.c")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, out)
	}
	for _, f := range []string{"port_bpfel.o"} {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s does not match port.c: run `make generate` and commit the result", f)
		}
	}
}
