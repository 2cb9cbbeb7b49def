# walhook: `make demo` runs walhook against a throwaway PostgreSQL and prints
# the deliveries; `make test` runs the whole suite; `make bench` measures
# walhook against pg_recvlogical and prints a report. They install what they
# need (PostgreSQL server binaries from Debian's postgresql package).

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TOOLS       := $(CURDIR)/.tools
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test lint unit demo bench postgres rabbitmq clean

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

test: postgres rabbitmq lint
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
