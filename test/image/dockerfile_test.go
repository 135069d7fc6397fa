package image

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is a parsed Dockerfile: the global ARGs (before the first FROM) and the stages.
// The parser knows what this repository's Dockerfile uses: instructions, continuation lines,
// comments, FROM ... AS, and the shell and JSON forms; it fails on anything else it meets
// (heredocs), so that a check never passes on a misread file.
type dockerfile struct {
	args   map[string]string
	stages []*stage
}

// stage is one FROM and the instructions after it.
type stage struct {
	index  int
	base   string // the image after FROM, global ARGs expanded
	name   string // the AS name, or ""
	line   int
	instrs []instr
}

// instr is one instruction: its keyword in upper case and the rest, continuation lines joined.
type instr struct {
	cmd  string
	args string
	line int
}

func (i instr) String() string { return fmt.Sprintf("line %d: %s %s", i.line, i.cmd, i.args) }

func (s *stage) String() string {
	if s.name != "" {
		return fmt.Sprintf("stage %q (FROM %s, line %d)", s.name, s.base, s.line)
	}
	return fmt.Sprintf("stage %d (FROM %s, line %d)", s.index, s.base, s.line)
}

func parseDockerfile(file string) (*dockerfile, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	d := &dockerfile{args: map[string]string{}}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		text := strings.TrimSpace(lines[i])
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		// A trailing backslash continues the instruction; comment lines inside it are dropped.
		for strings.HasSuffix(text, `\`) {
			text = strings.TrimSuffix(text, `\`)
			for i+1 < len(lines) {
				i++
				next := strings.TrimSpace(lines[i])
				if next == "" || strings.HasPrefix(next, "#") {
					continue
				}
				text += " " + next
				break
			}
			if i+1 >= len(lines) && strings.HasSuffix(text, `\`) {
				return nil, fmt.Errorf("%s:%d: continuation at the end of the file", file, start)
			}
		}
		fields := strings.Fields(text)
		cmd := strings.ToUpper(fields[0])
		rest := strings.TrimSpace(strings.TrimPrefix(text, fields[0]))
		if strings.Contains(rest, "<<") && (cmd == "RUN" || cmd == "COPY") {
			return nil, fmt.Errorf("%s:%d: heredocs are not understood by this test's parser", file, start)
		}
		if cmd == "FROM" {
			st := &stage{index: len(d.stages), line: start}
			var words []string
			for _, f := range fields[1:] {
				if !strings.HasPrefix(f, "--") {
					words = append(words, f)
				}
			}
			if len(words) == 0 {
				return nil, fmt.Errorf("%s:%d: FROM without an image", file, start)
			}
			st.base = os.Expand(words[0], func(k string) string { return d.args[k] })
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				st.name = words[2]
			} else if len(words) != 1 {
				return nil, fmt.Errorf("%s:%d: cannot read FROM %s", file, start, rest)
			}
			d.stages = append(d.stages, st)
			continue
		}
		if len(d.stages) == 0 {
			if cmd != "ARG" {
				return nil, fmt.Errorf("%s:%d: %s before the first FROM", file, start, cmd)
			}
			k, v, _ := strings.Cut(rest, "=")
			d.args[k] = v
			continue
		}
		st := d.stages[len(d.stages)-1]
		st.instrs = append(st.instrs, instr{cmd: cmd, args: rest, line: start})
	}
	if len(d.stages) == 0 {
		return nil, fmt.Errorf("%s: no FROM", file)
	}
	return d, nil
}

// stageByRef is the stage that COPY --from=ref names: by name, or by index.
func (d *dockerfile) stageByRef(ref string) *stage {
	for _, s := range d.stages {
		if s.name == ref {
			return s
		}
	}
	if n, err := strconv.Atoi(ref); err == nil && n >= 0 && n < len(d.stages) {
		return d.stages[n]
	}
	return nil
}

// all returns the stage's instructions of one kind.
func (s *stage) all(cmd string) []instr {
	var out []instr
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// declaresArg reports whether the stage declares ARG name before line: a stage sees only the
// ARGs it declares itself (a global ARG too must be re-declared), else ${name} is empty.
func (s *stage) declaresArg(name string, line int) bool {
	for _, in := range s.instrs {
		if in.cmd != "ARG" || in.line >= line {
			continue
		}
		k, _, _ := strings.Cut(in.args, "=")
		if k == name {
			return true
		}
	}
	return false
}

// shellWords splits s like a POSIX shell: quotes group and are removed, a backslash escapes the
// next character outside single quotes. Variables are left as written.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\\':
			escaped, inWord = true, true
		case quote == '"':
			if r == '"' {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 || escaped {
		return nil, fmt.Errorf("unterminated quote or escape in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// simpleCommands splits a RUN's shell command into its simple commands (at &&, ||, ;, |).
func simpleCommands(run string) ([][]string, error) {
	words, err := shellWords(run)
	if err != nil {
		return nil, err
	}
	var cmds [][]string
	var cur []string
	for _, w := range words {
		if w == "&&" || w == "||" || w == ";" || w == "|" {
			if len(cur) > 0 {
				cmds = append(cmds, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, strings.TrimSuffix(w, ";"))
	}
	if len(cur) > 0 {
		cmds = append(cmds, cur)
	}
	return cmds, nil
}

// copyArgs reads a COPY: its --flags, its sources and its destination.
func copyArgs(in instr) (flags map[string]string, srcs []string, dst string, err error) {
	var words []string
	if strings.HasPrefix(in.args, "[") {
		// The JSON form takes no flags.
		if err := json.Unmarshal([]byte(in.args), &words); err != nil {
			return nil, nil, "", fmt.Errorf("%v: %v", in, err)
		}
	} else if words, err = shellWords(in.args); err != nil {
		return nil, nil, "", fmt.Errorf("%v: %v", in, err)
	}
	flags = map[string]string{}
	for len(words) > 0 && strings.HasPrefix(words[0], "--") {
		k, v, _ := strings.Cut(strings.TrimPrefix(words[0], "--"), "=")
		flags[k] = v
		words = words[1:]
	}
	if len(words) < 2 {
		return nil, nil, "", fmt.Errorf("%v: COPY needs a source and a destination", in)
	}
	return flags, words[:len(words)-1], words[len(words)-1], nil
}

// imageSpec is what the Dockerfile says about the binary: where the final stage runs it from,
// which stage and command build it, and where that stage leaves it.
type imageSpec struct {
	df         *dockerfile
	final      *stage
	build      *stage
	entrypoint []string
	binCopy    instr  // the final stage's COPY --from=<build> of the entrypoint
	binSrc     string // its source path in the build stage
	makeRun    instr  // the build stage's RUN that runs make build
	makeArgs   []string
	workdir    string // the build stage's WORKDIR at the make RUN
}

// readImageSpec parses the Dockerfile at the repository root and follows the entrypoint back
// to the RUN that builds it. Each step that cannot be followed fails the test with the line.
func readImageSpec(t testing.TB) *imageSpec {
	t.Helper()
	file := filepath.Join(repoRoot(t), "Dockerfile")
	df, err := parseDockerfile(file)
	if err != nil {
		t.Fatalf("parse the Dockerfile: %v", err)
	}
	spec := &imageSpec{df: df, final: df.stages[len(df.stages)-1]}
	eps := spec.final.all("ENTRYPOINT")
	if len(eps) == 0 {
		t.Fatalf("the final %v has no ENTRYPOINT", spec.final)
	}
	ep := eps[len(eps)-1]
	if err := json.Unmarshal([]byte(ep.args), &spec.entrypoint); err != nil || len(spec.entrypoint) == 0 {
		t.Fatalf("%v: the ENTRYPOINT must be the JSON exec form, [\"/raft-elector\"]: the final image has no shell to run the shell form", ep)
	}
	for _, in := range spec.final.all("COPY") {
		flags, srcs, dst, err := copyArgs(in)
		if err != nil {
			t.Fatal(err)
		}
		if path.Clean(dst) != spec.entrypoint[0] {
			continue
		}
		if flags["from"] == "" || len(srcs) != 1 {
			t.Fatalf("%v: the entrypoint %s must be one file copied --from the build stage", in, spec.entrypoint[0])
		}
		spec.binCopy, spec.binSrc = in, srcs[0]
		if spec.build = df.stageByRef(flags["from"]); spec.build == nil {
			t.Fatalf("%v: no stage %q", in, flags["from"])
		}
	}
	if spec.build == nil {
		t.Fatalf("the final %v does not COPY its entrypoint %s --from a build stage", spec.final, spec.entrypoint[0])
	}
	spec.workdir = "/"
	for _, in := range spec.build.instrs {
		switch in.cmd {
		case "WORKDIR":
			spec.workdir = path.Join(spec.workdir, in.args)
		case "RUN":
			cmds, err := simpleCommands(in.args)
			if err != nil {
				t.Fatalf("%v: %v", in, err)
			}
			for _, c := range cmds {
				if c[0] == "make" && slices.Contains(c[1:], "build") {
					if spec.makeArgs != nil {
						t.Fatalf("%v: the build %v runs make build twice", in, spec.build)
					}
					spec.makeRun, spec.makeArgs = in, c[1:]
				}
			}
		}
		if spec.makeArgs != nil {
			break
		}
	}
	if spec.makeArgs == nil {
		t.Fatalf("the %v that builds %s runs no `make build`: build the image with the command developers and CI use", spec.build, spec.binSrc)
	}
	return spec
}

// makeBuildCommand is the command `make build` runs, as make -n prints it, split into words.
func makeBuildCommand(t testing.TB, version string) []string {
	t.Helper()
	cmd := exec.Command("make", "-C", repoRoot(t), "--no-print-directory", "-n", "build", "VERSION="+version)
	cmd.Env = toolEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " build ") && strings.Contains(line, "./cmd/sidecar") {
			words, err := shellWords(line)
			if err != nil {
				t.Fatalf("make -n build printed %q: %v", line, err)
			}
			return words
		}
	}
	t.Fatalf("make -n build prints no go build of ./cmd/sidecar:\n%s", out)
	return nil
}

// flagValue returns the word after flag in words.
func flagValue(words []string, flag string) (string, bool) {
	i := slices.Index(words, flag)
	if i < 0 || i+1 >= len(words) {
		return "", false
	}
	return words[i+1], true
}

// TestDockerfileBuildStageRunsMakeBuild: the binary in the image is built by exactly
// `make build VERSION=${VERSION}` (nothing added), in the build stage whose output the final
// stage copies, from that stage's bin path, after a module download layer.
func TestDockerfileBuildStageRunsMakeBuild(t *testing.T) {
	spec := readImageSpec(t)
	var targets, assigns, flags []string
	for _, a := range spec.makeArgs {
		switch {
		case strings.HasPrefix(a, "-"):
			flags = append(flags, a)
		case strings.Contains(a, "="):
			assigns = append(assigns, a)
		default:
			targets = append(targets, a)
		}
	}
	if len(flags) > 0 || !slices.Equal(targets, []string{"build"}) {
		t.Errorf("%v: want exactly `make build VERSION=${VERSION}`, got make %s", spec.makeRun, strings.Join(spec.makeArgs, " "))
	}
	if len(assigns) != 1 || (assigns[0] != "VERSION=${VERSION}" && assigns[0] != "VERSION=$VERSION") {
		t.Errorf("%v: make build must set only VERSION=${VERSION} (another variable would change the build), got %v", spec.makeRun, assigns)
	}
	if !spec.build.declaresArg("VERSION", spec.makeRun.line) {
		t.Errorf("the %v uses ${VERSION} without declaring ARG VERSION in it: the binary would be stamped with an empty version", spec.build)
	}

	// The final stage copies what make build wrote: BIN (the -o of make -n) under WORKDIR.
	words := makeBuildCommand(t, "x")
	bin, ok := flagValue(words, "-o")
	if !ok {
		t.Fatalf("make -n build has no -o: %q", words)
	}
	if want := path.Join(spec.workdir, bin); path.Clean(spec.binSrc) != want {
		t.Errorf("%v copies %s, but make build in WORKDIR %s writes %s", spec.binCopy, spec.binSrc, spec.workdir, want)
	}

	// Layer order: go.mod and go.sum, go mod download, the source, make build.
	at := func(match func(instr) bool) int {
		for i, in := range spec.build.instrs {
			if match(in) {
				return i
			}
		}
		return -1
	}
	mods := at(func(in instr) bool {
		_, srcs, _, err := copyArgs(in)
		return in.cmd == "COPY" && err == nil && slices.Contains(srcs, "go.mod") && slices.Contains(srcs, "go.sum")
	})
	download := at(func(in instr) bool { return in.cmd == "RUN" && strings.Contains(in.args, "go mod download") })
	source := at(func(in instr) bool {
		_, srcs, _, err := copyArgs(in)
		return in.cmd == "COPY" && err == nil && slices.Contains(srcs, ".")
	})
	build := at(func(in instr) bool { return in == spec.makeRun })
	if mods < 0 || download < 0 || source < 0 || !(mods < download && download < source && source < build) {
		t.Errorf("the %v must COPY go.mod go.sum, RUN go mod download, COPY . and then RUN make build, in that order (the module layer stays cached while only the source changes)", spec.build)
	}
}

// TestMakeBuildIsStaticTrimmedAndStamped: the command make build runs (so the one the image
// build runs) disables cgo, trims paths, strips symbols and DWARF, and stamps main.version.
func TestMakeBuildIsStaticTrimmedAndStamped(t *testing.T) {
	words := makeBuildCommand(t, "x")
	if !slices.Contains(words, "CGO_ENABLED=0") {
		t.Errorf("make build: no CGO_ENABLED=0 (a cgo binary needs libc, which distroless static lacks): %q", words)
	}
	if !slices.Contains(words, "-trimpath") {
		t.Errorf("make build: no -trimpath: %q", words)
	}
	ldflags, ok := flagValue(words, "-ldflags")
	if !ok {
		t.Fatalf("make build: no -ldflags: %q", words)
	}
	ld := strings.Fields(ldflags)
	if !slices.Contains(ld, "-s") || !slices.Contains(ld, "-w") {
		t.Errorf("make build: -ldflags %q lacks -s -w (strip the symbol table and DWARF)", ldflags)
	}
	if v, ok := flagValue(ld, "-X"); !ok || v != "main.version=x" {
		t.Errorf("make build VERSION=x: -ldflags %q does not set -X main.version=x", ldflags)
	}
	if words[len(words)-1] != "./cmd/sidecar" {
		t.Errorf("make build does not build ./cmd/sidecar: %q", words)
	}
}

// splitImageRef splits an image reference into repository, tag and digest
// (registry.example:5000/team/golang:1.26.8-bookworm@sha256:... → ..., 1.26.8-bookworm, sha256:...).
func splitImageRef(ref string) (repo, tag, digest string) {
	repo, digest, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}

// goModVersion is the Go release go.mod asks for: its toolchain line, else its go line.
func goModVersion(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^toolchain\s+go(\S+)`).FindSubmatch(b); m != nil {
		return string(m[1])
	}
	if m := regexp.MustCompile(`(?m)^go\s+(\S+)`).FindSubmatch(b); m != nil {
		return string(m[1])
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// TestDockerfileBuilderMatchesGoMod: the build stage's Go is the release go.mod names, pinned.
func TestDockerfileBuilderMatchesGoMod(t *testing.T) {
	spec := readImageSpec(t)
	want := goModVersion(t)
	repo, tag, _ := splitImageRef(spec.build.base)
	if repo != "golang" && !strings.HasSuffix(repo, "/golang") {
		t.Fatalf("the %v does not build FROM the golang image", spec.build)
	}
	if ver, _, _ := strings.Cut(tag, "-"); ver != want {
		t.Errorf("the %v has Go %q, go.mod asks for %s: build the image with the Go that CI tests", spec.build, ver, want)
	}
}

// TestDockerfileFinalStage: the image is distroless static (or scratch) holding the binary as
// its exec-form entrypoint, run as a numeric non-root user, with no RUN (there is no shell),
// the default peer and ops ports exposed, and OCI labels whose variables are declared.
func TestDockerfileFinalStage(t *testing.T) {
	spec := readImageSpec(t)
	final := spec.final
	base := final.base
	if base != "scratch" {
		repo, tag, digest := splitImageRef(base)
		if !strings.HasPrefix(repo, "gcr.io/distroless/static") {
			t.Errorf("the final %v is not distroless static or scratch", final)
		}
		if (tag == "" || tag == "latest") && !strings.HasPrefix(digest, "sha256:") {
			t.Errorf("the final %v is not pinned to a tag or digest", final)
		}
	}
	if spec.entrypoint[0] != "/raft-elector" || len(spec.entrypoint) != 1 {
		t.Errorf("ENTRYPOINT is %q, want [\"/raft-elector\"] (the chart passes the flags as args)", spec.entrypoint)
	}
	if runs := final.all("RUN"); len(runs) > 0 {
		t.Errorf("%v: the final stage cannot RUN anything: distroless static has no shell", runs[0])
	}
	for _, in := range final.all("CMD") {
		if !strings.HasPrefix(in.args, "[") {
			t.Errorf("%v: CMD must be the JSON form: there is no shell", in)
		}
	}

	users := final.all("USER")
	if len(users) == 0 {
		t.Fatalf("the final %v sets no USER", final)
	}
	user := users[len(users)-1]
	uid, gid, _ := strings.Cut(user.args, ":")
	u, uerr := strconv.Atoi(uid)
	g, gerr := strconv.Atoi(gid)
	if uerr != nil || gerr != nil || u == 0 || g == 0 {
		t.Errorf("%v: want a numeric non-root uid:gid (the kubelet verifies runAsNonRoot only for a numeric USER)", user)
	}

	// EXPOSE names the default peer and ops ports of cmd/sidecar.
	consts := stringConsts(t, filepath.Join(repoRoot(t), "cmd", "sidecar", "config.go"))
	var exposed []string
	for _, in := range final.all("EXPOSE") {
		for _, p := range strings.Fields(in.args) {
			exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
		}
	}
	for _, c := range []string{"DefaultPeerAddr", "DefaultOpsAddr"} {
		addr, ok := consts[c]
		if !ok {
			t.Errorf("cmd/sidecar/config.go has no constant %s", c)
			continue
		}
		_, port, _ := strings.Cut(addr, ":")
		if !slices.Contains(exposed, port) {
			t.Errorf("EXPOSE %v lacks port %s of %s (%q)", exposed, port, c, addr)
		}
	}

	// OCI labels, and every ${VAR} they use declared in this stage (else it is empty).
	labels := map[string]string{}
	for _, in := range final.all("LABEL") {
		words, err := shellWords(in.args)
		if err != nil {
			t.Fatalf("%v: %v", in, err)
		}
		for _, w := range words {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				t.Fatalf("%v: %q is not key=value", in, w)
			}
			labels[k] = v
			for _, m := range regexp.MustCompile(`\$\{?(\w+)`).FindAllStringSubmatch(v, -1) {
				if !final.declaresArg(m[1], in.line) {
					t.Errorf("%v: label %s uses $%s, which the final stage does not declare (ARG %s)", in, k, m[1], m[1])
				}
			}
		}
	}
	for _, k := range []string{"source", "version", "title", "licenses"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("the final stage has no label org.opencontainers.image.%s", k)
		}
	}
	if v := labels["org.opencontainers.image.version"]; v != "${VERSION}" && v != "$VERSION" {
		t.Errorf("label org.opencontainers.image.version is %q, want ${VERSION}: the same stamp as the binary", v)
	}
}

// stringConsts evaluates the string constants of a Go file: literals and their concatenations.
func stringConsts(t testing.TB, file string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	exprs := map[string]ast.Expr{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					exprs[n.Name] = vs.Values[i]
				}
			}
		}
	}
	var eval func(ast.Expr, int) (string, bool)
	eval = func(e ast.Expr, depth int) (string, bool) {
		if depth > 10 {
			return "", false
		}
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		case *ast.Ident:
			if x, ok := exprs[e.Name]; ok {
				return eval(x, depth+1)
			}
		case *ast.BinaryExpr:
			if e.Op == token.ADD {
				a, ok1 := eval(e.X, depth+1)
				b, ok2 := eval(e.Y, depth+1)
				return a + b, ok1 && ok2
			}
		case *ast.ParenExpr:
			return eval(e.X, depth+1)
		}
		return "", false
	}
	out := map[string]string{}
	for n, e := range exprs {
		if s, ok := eval(e, 0); ok {
			out[n] = s
		}
	}
	return out
}

// dockerignore is the exclusion list of .dockerignore, matched like Docker does: a pattern
// (path.Match syntax, relative to the context root) excludes a path when it matches the path or
// one of its parent directories; "!" re-includes; the last matching pattern wins.
type dockerignore struct {
	patterns   []string
	exceptions bool
}

func readDockerignore(t testing.TB, root string) *dockerignore {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatalf("read .dockerignore: %v", err)
	}
	d := &dockerignore{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "**") {
			t.Fatalf(".dockerignore: %q: this test's matcher does not know **", line)
		}
		neg := strings.HasPrefix(line, "!")
		p := path.Clean(strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/"))
		if _, err := path.Match(p, ""); err != nil {
			t.Fatalf(".dockerignore: bad pattern %q: %v", line, err)
		}
		if neg {
			p = "!" + p
			d.exceptions = true
		}
		d.patterns = append(d.patterns, p)
	}
	return d
}

// excluded reports whether the context leaves out rel (slash-separated, relative to the root).
func (d *dockerignore) excluded(rel string) bool {
	out := false
	for _, p := range d.patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		for q := rel; q != "." && q != "/" && q != ""; q = path.Dir(q) {
			if ok, _ := path.Match(p, q); ok {
				out = !neg
				break
			}
		}
	}
	return out
}

// TestDockerignore: the build context leaves out .git (history, and a cache buster), .cache
// (gigabytes of kube-apiserver and etcd builds) and bin (a stale binary), and keeps everything
// make build needs: go.mod, go.sum, the Makefile and every package of this module that
// cmd/sidecar imports, with their embedded files. (The binary test builds from such a copy.)
func TestDockerignore(t *testing.T) {
	root := repoRoot(t)
	di := readDockerignore(t, root)
	for _, p := range []string{".git", ".cache", "bin", "bin/raft-elector", ".cache/kube/bin/etcd"} {
		if !di.excluded(p) {
			t.Errorf(".dockerignore does not exclude %s", p)
		}
	}
	need := []string{"go.mod", "go.sum", "Makefile"}
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`, "./cmd/sidecar")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/sidecar: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rel, err := filepath.Rel(root, f[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range f[1:] {
			need = append(need, filepath.ToSlash(filepath.Join(rel, name)))
		}
	}
	for _, p := range need {
		if di.excluded(p) {
			t.Errorf(".dockerignore excludes %s, which make build needs", p)
		}
	}
}
