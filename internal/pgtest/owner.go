package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// serverUser is the OS user a cluster runs as when the tests run as root:
// PostgreSQL refuses to run as root. Debian's postgresql package creates it.
const serverUser = "postgres"

// owner says which OS user runs a cluster's programs and owns its files.
// The zero owner is the current user.
type owner struct {
	cred *syscall.Credential // nil: run as the current user
}

// clusterOwner returns the current user, or the postgres user when the
// current user is root.
func clusterOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{}, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return owner{}, fmt.Errorf("tests run as root, and PostgreSQL refuses to run as root, "+
			"but there is no %q user to run it as (%w): install Debian's postgresql package, "+
			"which creates it, or run the tests as an unprivileged user", serverUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return owner{}, fmt.Errorf("user %q: uid %q: %w", serverUser, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return owner{}, fmt.Errorf("user %q: gid %q: %w", serverUser, u.Gid, err)
	}
	// Groups is empty, so the child drops root's supplementary groups too.
	return owner{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}, nil
}

// chown gives path to the owner; a no-op for the current user.
func (o owner) chown(path string) error {
	if o.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(o.cred.Uid), int(o.cred.Gid)); err != nil {
		return fmt.Errorf("chown %s to user %q: %w", path, serverUser, err)
	}
	return nil
}

// command prepares a program to run as the owner, in dir, with an
// environment that cannot redirect it: PG* variables (PGDATA, PGPORT, ...)
// are dropped and messages are in the C locale.
func (o owner) command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	if o.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	return cmd
}

// childEnv is the environment of the programs a cluster runs.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") || strings.HasPrefix(name, "LC_") ||
			name == "LANG" || name == "LANGUAGE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// tempBase returns the directory to create clusters in: os.TempDir(), or
// /tmp when the owner could not reach a directory inside os.TempDir() (for
// example TMPDIR under /root while the cluster runs as postgres).
func (o owner) tempBase() (string, error) {
	base := os.TempDir()
	if o.cred == nil {
		return base, nil
	}
	ok, err := o.canTraverse(base)
	if err == nil && ok {
		return base, nil
	}
	if ok, err2 := o.canTraverse("/tmp"); err2 == nil && ok {
		return "/tmp", nil
	}
	if err == nil {
		err = errors.New("a parent directory is not searchable by that user")
	}
	return "", fmt.Errorf("temporary directory %s cannot be reached by user %q, nor can /tmp: %w "+
		"(set TMPDIR to a directory every user can search)", base, serverUser, err)
}

// canTraverse reports whether the owner may search dir and every directory
// above it, judged from the permission bits (supplementary groups aside).
func (o owner) canTraverse(dir string) (bool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return false, err
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return false, err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return false, fmt.Errorf("stat %s: no owner information", dir)
		}
		var bit os.FileMode = 0o001
		switch {
		case st.Uid == o.cred.Uid:
			bit = 0o100
		case st.Gid == o.cred.Gid:
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return false, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true, nil
		}
		dir = parent
	}
}
