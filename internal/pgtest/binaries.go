package pgtest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// debianRoot holds one directory per installed major version on Debian and
// Ubuntu (/usr/lib/postgresql/15/bin, ...), none of them on PATH.
const debianRoot = "/usr/lib/postgresql"

// binaries are the server programs a cluster needs. They always come from
// one directory, so initdb, pg_ctl and postgres are of the same version.
type binaries struct {
	dir      string
	initdb   string
	pgCtl    string
	postgres string
}

// locateBinaries looks for a directory holding initdb, pg_ctl and postgres:
// the one of initdb on PATH (symbolic links resolved), then the one
// `pg_config --bindir` names, then the highest version under root.
func locateBinaries(root string) (binaries, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			dirs = append(dirs, dir)
		}
	}
	dirs = append(dirs, versionDirs(root)...)
	for _, dir := range dirs {
		if b, ok := binariesIn(dir); ok {
			return b, nil
		}
	}
	return binaries{}, errors.New("no PostgreSQL server programs (initdb, pg_ctl, postgres) " +
		"on PATH, in `pg_config --bindir` or in " + root + "/*/bin: " +
		"install Debian's postgresql package (apt-get install postgresql)")
}

// binariesIn reports the server programs in dir, if all of them are there.
func binariesIn(dir string) (binaries, bool) {
	b := binaries{
		dir:      dir,
		initdb:   filepath.Join(dir, "initdb"),
		pgCtl:    filepath.Join(dir, "pg_ctl"),
		postgres: filepath.Join(dir, "postgres"),
	}
	for _, p := range []string{b.initdb, b.pgCtl, b.postgres} {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return binaries{}, false
		}
	}
	return b, true
}

// versionDirs returns root/VERSION/bin for every version directory under
// root, highest version first ("15" before "10" before "9.6").
func versionDirs(root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	type versionDir struct {
		version []int
		dir     string
	}
	var found []versionDir
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		found = append(found, versionDir{v, filepath.Join(root, e.Name(), "bin")})
	}
	slices.SortFunc(found, func(a, b versionDir) int {
		return slices.Compare(b.version, a.version)
	})
	dirs := make([]string, len(found))
	for i, f := range found {
		dirs[i] = f.dir
	}
	return dirs
}

// parseVersion parses a dotted version such as "15" or "9.6".
func parseVersion(s string) ([]int, bool) {
	var v []int
	for part := range strings.SplitSeq(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}
