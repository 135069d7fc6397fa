package image

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testVersion is the VERSION build argument of the test build: distinctive, so that finding it
// in the binary means the stamp worked.
var testVersion = fmt.Sprintf("image-test-%d", os.Getpid())

var (
	buildOnce sync.Once
	builtBin  string
	buildDir  string
	buildErr  error
)

// imageBinary returns the binary the image would hold. It copies the Docker build context (the
// repository less what .dockerignore excludes: no .git, no bin) to a temporary directory that
// stands for the build stage's WORKDIR and runs the build stage's own RUN command there with
// sh -c, VERSION set as the build argument would set it, so both the file set and the command
// are the image build's. The binary is where the final stage's COPY takes it from.
func imageBinary(t testing.TB) (bin, contextDir string) {
	t.Helper()
	spec := readImageSpec(t)
	root := repoRoot(t)
	di := readDockerignore(t, root)
	buildOnce.Do(func() {
		buildDir = filepath.Join(tempRoot, "context")
		if buildErr = copyContext(root, buildDir, di); buildErr != nil {
			return
		}
		rel, err := filepath.Rel(spec.workdir, spec.binSrc)
		if err != nil || strings.HasPrefix(rel, "..") {
			buildErr = fmt.Errorf("%v copies %s, which is not under the build stage's WORKDIR %s", spec.binCopy, spec.binSrc, spec.workdir)
			return
		}
		cmd := exec.Command("/bin/sh", "-c", spec.makeRun.args)
		cmd.Dir = buildDir
		cmd.Env = toolEnv("VERSION=" + testVersion)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("RUN %s (Dockerfile line %d) in a copy of the build context: %v\n%s", spec.makeRun.args, spec.makeRun.line, err, out)
			return
		}
		builtBin = filepath.Join(buildDir, filepath.FromSlash(rel))
		if _, err := os.Stat(builtBin); err != nil {
			buildErr = fmt.Errorf("RUN %s made no %s: %v\n%s", spec.makeRun.args, spec.binSrc, err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build the image's binary: %v", buildErr)
	}
	return builtBin, buildDir
}

// copyContext copies the files of root that the build context holds into dst.
func copyContext(root, dst string, di *dockerignore) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		if di.excluded(filepath.ToSlash(rel)) {
			if d.IsDir() && !di.exceptions {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			return copyFile(p, target)
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestBinaryStaticStrippedNoCgo: the binary needs nothing from the image's file system to
// start (no dynamic loader, no shared libraries), carries no symbol table or DWARF, was built
// with cgo off and -trimpath, and holds none of the build machine's paths.
func TestBinaryStaticStrippedNoCgo(t *testing.T) {
	bin, contextDir := imageBinary(t)
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binary size: %d bytes (%.1f MiB), version %s", st.Size(), float64(st.Size())/(1<<20), testVersion)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("read the binary as ELF: %v", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %v, want ET_EXEC (a position-independent executable needs a loader)", f.Type)
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Errorf("the binary has a PT_INTERP program header: it needs a dynamic loader, which distroless static lacks")
		case elf.PT_DYNAMIC:
			t.Errorf("the binary has a PT_DYNAMIC program header: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("DT_NEEDED libraries %v (err %v), want none", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("the binary has a .symtab: not stripped (-ldflags -s)")
	}
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Errorf("the binary has DWARF section %s (-ldflags -w)", s.Name)
		}
	}

	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("read the build info: %v", err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	t.Logf("built by %s for %s/%s", bi.GoVersion, settings["GOOS"], settings["GOARCH"])
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("build info CGO_ENABLED=%q, want 0", settings["CGO_ENABLED"])
	}
	if settings["-trimpath"] != "true" {
		t.Errorf("build info -trimpath=%q, want true", settings["-trimpath"])
	}
	if bi.Path != "github.com/raft-elector/raft-elector/cmd/sidecar" {
		t.Errorf("build info path %q, want the cmd/sidecar package", bi.Path)
	}

	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	goroot, _ := exec.Command("go", "env", "GOROOT").Output()
	modcache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
	for _, p := range []string{contextDir, repoRoot(t), strings.TrimSpace(string(goroot)), strings.TrimSpace(string(modcache))} {
		if p != "" && bytes.Contains(data, []byte(p)) {
			t.Errorf("the binary holds the build machine's path %s: built without -trimpath?", p)
		}
	}
}

// TestBinaryVersionStamped: the VERSION build argument reaches the binary: `raft-elector
// version` and `--version` print it, and it is in the file.
func TestBinaryVersionStamped(t *testing.T) {
	bin, _ := imageBinary(t)
	want := "raft-elector " + testVersion
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Errorf("raft-elector %s: %v\n%s", arg, err, out)
			continue
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("raft-elector %s printed %q, want %q", arg, got, want)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(testVersion)) {
		t.Errorf("the binary does not contain its version stamp %q", testVersion)
	}
}
