# hotfleet: `make demo` runs the sample build -> apply -> status -> revert;
# `make test` runs every test (root and gcc needed; CI=true makes them mandatory).
GO ?= go
export CGO_ENABLED = 0
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build demo test bench fuzz clean

build:
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/hotfleet ./cmd/hotfleet

demo: build
	bash scripts/demo.sh

test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 60m ./...

# Pause benchmarks of the live patching engine; see BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench Pause -benchtime 200x -timeout 30m ./internal/livepatch/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./internal/bundle/

clean:
	rm -rf bin
