package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Interactive input of the config, init and join commands. Tests replace
// these variables.
var (
	promptStdin    io.Reader = os.Stdin
	stdinTerminal            = func() bool { return ttyFD(int(os.Stdin.Fd())) }
	readSecretLine           = func() ([]byte, error) { return readNoEcho(int(os.Stdin.Fd())) }
)

// promptReader is shared by successive prompts of one command, so that
// buffered input is not lost between them.
var (
	promptReader *bufio.Reader
	promptSrc    io.Reader
)

func stdinLine() (string, error) {
	if promptReader == nil || promptSrc != promptStdin {
		promptReader, promptSrc = bufio.NewReader(promptStdin), promptStdin
	}
	line, err := promptReader.ReadString('\n')
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// needConfirm returns a usage error when the command would have to ask but
// stdin is not a terminal (scripts must say --yes).
func needConfirm(yes bool) error {
	if !yes && !stdinTerminal() {
		return usagef("standard input is not a terminal: pass --yes to go ahead without asking")
	}
	return nil
}

// confirm asks question on w and reports whether the answer was yes.
func confirm(w io.Writer, question string, yes bool) (bool, error) {
	if yes {
		return true, nil
	}
	fmt.Fprintf(w, "%s [y/N] ", question)
	ans, err := stdinLine()
	if err != nil {
		if errors.Is(err, io.EOF) {
			fmt.Fprintln(w)
			return false, nil
		}
		return false, fmt.Errorf("read answer: %w", err)
	}
	ans = strings.ToLower(ans)
	return ans == "y" || ans == "yes", nil
}

func ttyFD(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// readNoEcho reads one line from the terminal fd with echo off.
func readNoEcho(fd int) ([]byte, error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read password: standard input is not a terminal: %w", err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	defer func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }()
	var out []byte
	var b [1]byte
	for {
		n, err := unix.Read(fd, b[:])
		if n == 1 {
			if b[0] == '\n' || b[0] == '\r' {
				return out, nil
			}
			out = append(out, b[0])
			continue
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("read password: %w", err)
		}
		if n == 0 && err == nil {
			return out, nil // EOF
		}
	}
}

// parseArgs is parseFlags allowing flags after positional arguments
// (`shoal join 10.0.0.1 --yes`); it returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// argAt returns pos[i], or "" when there are fewer arguments.
func argAt(pos []string, i int) string {
	if i < len(pos) {
		return pos[i]
	}
	return ""
}
