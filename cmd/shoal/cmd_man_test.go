package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestManCoversEveryCommand(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var out, errb bytes.Buffer
	if code := run([]string{"man"}, &out, &errb); code != 0 {
		t.Fatalf("shoal man: exit %d: %s", code, errb.String())
	}
	page := out.String()
	if !strings.Contains(page, `.TH SHOAL 1 "2023-11-14"`) {
		t.Errorf("man page header lacks the SOURCE_DATE_EPOCH date:\n%.200s", page)
	}
	for name, c := range commands {
		h := helpOf(c)
		if !strings.HasPrefix(h.usage, name) && !strings.HasPrefix(h.usage, "shoal "+name) {
			t.Errorf("%s --help: usage line %q does not name the command", name, h.usage)
		}
		if !strings.Contains(page, ".SS \""+roffEscape(h.usage)+"\"") {
			t.Errorf("man page has no section for %q", name)
		}
		for _, f := range h.flags {
			if !strings.Contains(page, roffEscape("-"+strings.TrimPrefix(f, "--"))) {
				t.Errorf("man page lacks %s %s", name, f)
			}
		}
	}
	// man(1) must render it without warnings where groff is installed.
	if _, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(page)
		if msg, err := cmd.CombinedOutput(); err != nil || len(msg) > 0 {
			t.Errorf("groff -man: %v: %s", err, msg)
		}
	}
}

func TestCompletionBash(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"completion", "bash"}, &out, &errb); code != 0 {
		t.Fatalf("shoal completion bash: exit %d: %s", code, errb.String())
	}
	script := out.String()
	for _, want := range []string{"complete -o filenames -F _shoal shoal", `"version") flags="--json"`, "setup"} {
		if !strings.Contains(script, want) {
			t.Errorf("completion script lacks %q", want)
		}
	}
	if code := run([]string{"completion", "zsh"}, &out, &errb); code != 2 {
		t.Errorf("completion zsh: exit %d, want 2", code)
	}
	// The script must parse, and complete "shoal ver" and "shoal version --j".
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	f := filepath.Join(t.TempDir(), "shoal.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	probe := `source "$1"
COMP_WORDS=(shoal ver); COMP_CWORD=1; _shoal; echo "${COMPREPLY[*]}"
COMP_WORDS=(shoal version --j); COMP_CWORD=2; _shoal; echo "${COMPREPLY[*]}"`
	got, err := exec.Command(bash, "-c", probe, "bash", f).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v: %s", err, got)
	}
	if want := "version\n--json\n"; string(got) != want {
		t.Errorf("completions = %q, want %q", got, want)
	}
}
