# devreg: make run | make test | make lint | make build | make bench
GO ?= go
# The PostgreSQL server the tests create their databases on (one per test, dropped after it).
# Set it empty (make test DEVREG_TEST_POSTGRES=) to skip the PostgreSQL tests on a machine without one.
DEVREG_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
export DEVREG_TEST_POSTGRES
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test lint build bench fuzz

run:
	$(GO) run ./cmd/devreg serve

test:
	$(GO) test -race ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

build:
	CGO_ENABLED=0 $(GO) build -o devreg ./cmd/devreg

# Registers 1,000,000 devices through a real server and prints devices/s, seconds, the ratio to
# the sqlite3 shell's .import of the same rows, and the server's peak memory.
bench:
	$(GO) run ./internal/bench

fuzz:
	$(GO) test ./bulkfile -run '^$$' -fuzz FuzzReader -fuzztime 60s
