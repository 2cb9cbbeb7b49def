# walhook: `make demo` runs walhook against a throwaway PostgreSQL and prints
# the deliveries; `make test` runs the whole suite; `make bench` measures
# walhook against pg_recvlogical and prints a report. They install what they
# need (PostgreSQL server binaries from Debian's postgresql package; for the
# console's browser tests Chromium and promtool for the alerting rules; for the
# broker sinks' tests, nats-server and redis-server from Debian's packages).

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TOOLS       := $(CURDIR)/.tools
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test lint unit demo bench postgres brokers chromium promtool clean

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

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install $(STATICCHECK)

lint: $(TOOLS)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	$(GO) mod tidy -diff

test: postgres brokers chromium promtool lint
	$(GO) test -race -count=1 -timeout 15m ./...
	# Allocation counts mean nothing under the race detector: check them without it.
	$(GO) test -count=1 -run 'Allocates' ./pgvalue/

demo: postgres build
	$(GO) run ./internal/demo

# The benchmark drives the binary `build` makes (no race detector) with
# a YAML configuration, as a user would. One to two minutes on 2 cores;
# `make bench BENCH_FLAGS=-quick` takes well under one, and
# BENCH_FLAGS='-json bench.json' also writes the report as JSON
# (`go run ./internal/bench -h` lists the flags).
BENCH_FLAGS ?=
bench: postgres build
	$(GO) run ./internal/bench -walhook bin/walhook $(BENCH_FLAGS)

clean:
	rm -rf bin $(TOOLS)
