# devreg: make run | make test | make lint | make build | make bench
GO ?= go
# The PostgreSQL server the tests create their databases on (one per test, dropped after it).
# Set it empty (make test DEVREG_TEST_POSTGRES=) to skip the PostgreSQL tests on a machine without one.
DEVREG_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export DEVREG_TEST_POSTGRES
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Spectral (with the OWASP ruleset) lints the OpenAPI document; pinned in tools/spectral/package-lock.json.
SPECTRAL_DIR = tools/spectral

.PHONY: run test lint build bench fuzz

run:
	$(GO) run ./cmd/devreg serve

test:
	$(GO) test -race -timeout 30m ./...

lint: $(SPECTRAL_DIR)/node_modules/.package-lock.json
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) run ./tools/openapijson > $(SPECTRAL_DIR)/openapi.json
	$(SPECTRAL_DIR)/node_modules/.bin/spectral lint --fail-severity error -r $(SPECTRAL_DIR)/.spectral.yaml $(SPECTRAL_DIR)/openapi.json

# npm writes node_modules/.package-lock.json on every install, so this reinstalls after a lockfile
# change. --ignore-scripts: no package needs one (the only script is a usage-analytics ping).
$(SPECTRAL_DIR)/node_modules/.package-lock.json: $(SPECTRAL_DIR)/package-lock.json
	npm ci --prefix $(SPECTRAL_DIR) --ignore-scripts --no-audit --no-fund

build:
	CGO_ENABLED=0 $(GO) build -o devreg ./cmd/devreg

# Registers 1,000,000 devices through a real server, three runs, and prints each figure of issue 17
# as a median with its spread and a ratio to a baseline measured in the same run: the sqlite3
# shell's .import (and PostgreSQL's COPY) into the smallest table that enforces the rule. About
# 5 minutes on 2 cores; go run ./cmd/devreg-bench -h for the commands and knobs. make bench BIG=1 registers
# ten batches of a million devices on PostgreSQL instead and measures the token rate before and
# after them (4 minutes here, 500 MB of temporary files and some GB of PostgreSQL database).
# make bench CERT_LOGIN=1 measures device logins over HTTPS instead, by secret and by certificate,
# full handshake and resumed session (under 2 minutes with the build). make bench CERTIFICATES=1
# registers 100,000 devices by certificate fingerprint against 100,000 by secret, and the raw
# tool's cost of the same fingerprint index (under a minute). make bench ENROLL=1 measures 10,000
# first connections through an enrollment group from 64 clients against as many token requests.
# make bench BATCH_DELETE=1 registers a lot of a million devices and deletes it (DELETE
# /api/v1/batches/{id}), on SQLite and PostgreSQL, against the raw DELETE of another lot.
# make bench EVENTS=1 delivers 10,000 events to a webhook and to a private nats-server -js, on
# SQLite and PostgreSQL, against signed POSTs in order and nats.go's publishes of the same events.
# make bench EVENTS_COST=1 BEFORE=d66f96d compares this tree with the build of the commit before
# events: a registration of a million devices, a device's change, token requests, on SQLite and
# PostgreSQL (10 minutes). make bench TOKENS=1 measures only the request rates (tokens, broker
# logins, topic checks, against /healthz) on a registry of 100,000 devices (2 minutes); PROCS=N
# runs the servers with GOMAXPROCS=N, for the scaling figures.
# One command at a time: the first option set picks it (registration, the default, when none is).
BENCH = $(firstword $(if $(filter 1,$(TOKENS)),tokens) $(if $(filter 1,$(BIG)),big) $(if $(filter 1,$(CERT_LOGIN)),cert-login) \
	$(if $(filter 1,$(CERTIFICATES)),certificates) $(if $(filter 1,$(ENROLL)),enroll) $(if $(filter 1,$(BATCH_DELETE)),batch-delete) \
	$(if $(filter 1,$(EVENTS)),events) $(if $(filter 1,$(EVENTS_COST)),events-cost) registration)
bench:
	$(GO) run ./cmd/devreg-bench $(BENCH) $(if $(filter tokens,$(BENCH)),-n 100000) $(if $(PROCS),-server-procs $(PROCS)) $(if $(filter events-cost,$(BENCH)),-events-cost-before $(BEFORE))

fuzz:
	$(GO) test ./bulkfile -run '^$$' -fuzz FuzzReader -fuzztime 60s
	$(GO) test ./bulkfile -run '^$$' -fuzz FuzzJSONEntries -fuzztime 60s
