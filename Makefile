# raft-elector — every target CI needs. `make test` is what CI runs (.ci/run).
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN      := bin/raft-elector
LDFLAGS  := -s -w -X main.version=$(VERSION)
# Packages with unit tests: everything except the suites that start real processes (members,
# or kube-apiserver and etcd), which run once each, one package at a time, below.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v -e /test/e2e -e /test/kubeenv -e /test/kube/ -e /test/chart)
KUBE_PKGS = ./test/kubeenv/ ./test/kube/...
CHART_PKGS = ./test/chart/

.PHONY: all build image test fmt-check vet unit e2e kube-env kube-test helm chart-check chart-test demo bench bench-quick fuzz nemesis clean

all: build

## build: the static binary, exactly as the Dockerfile builds it.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/sidecar

## test: everything CI runs: formatting, vet, unit tests with the race detector (fuzz seed
## corpora included; test/image checks the Dockerfile and the static binary), the suites
## against a real kube-apiserver, the Helm chart (lint, template, applied to the API server),
## and the multi-process suite against real raft-elector processes.
test: fmt-check vet unit kube-test chart-test e2e

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

e2e: kube-env helm
	$(GO) test -race -count=1 -p 1 -timeout 30m ./test/e2e/

## helm: build Helm from the Go module proxy into .cache/helm (about 2 minutes the first time,
## cached after).
helm:
	hack/helm/build.sh

## chart-check: helm lint --strict and helm template of the chart, every ci/*-values.yaml and
## the parent-chart example.
chart-check: helm
	hack/helm/check.sh

## chart-test: the chart's Go tests, offline and against a real kube-apiserver.
chart-test: chart-check kube-env
	$(GO) test -race -count=1 -p 1 -timeout 10m $(CHART_PKGS)

## kube-env: build kube-apiserver and etcd from the Go module proxy into .cache/kube
## (minutes the first time, cached after; rebuilt when hack/kube/*/go.mod changes).
kube-env:
	hack/kube/build.sh

## kube-test: the tests against a real kube-apiserver and etcd.
kube-test: kube-env
	$(GO) test -race -count=1 -p 1 -timeout 20m $(KUBE_PKGS)

## demo: a 3-member cluster in one process; Ctrl-C to stop.
demo:
	$(GO) run ./cmd/sidecar demo --chaos

## bench: raft-elector side by side with client-go's Lease election (test/leaseelector), both
## as real processes against a real kube-apiserver: failover after SIGKILL and handover after
## SIGTERM (50 events each per configuration), leaderless and overlapping-leader time, API-server
## requests and writes, CPU and RSS, and their growth with cluster size (up to 5 voters + 100
## learners). About an hour; writes docs/benchmarks.md and docs/bench-*.png and prints the
## ratios against the baseline. BENCH_ARGS adds flags, e.g. -compare.only='raft-elector fast'.
## bench-quick: 3 members, 5 events, short windows; a few minutes; prints only.
BENCH_ARGS ?=
bench: kube-env
	$(GO) test ./test/e2e -run '^TestCompareBenchmark$$' -count=1 -timeout 120m -v -args -compare $(BENCH_ARGS)

bench-quick: kube-env
	$(GO) test ./test/e2e -run '^TestCompareBenchmark$$' -count=1 -timeout 30m -v -args -compare -compare.quick $(BENCH_ARGS)

## nemesis: the long form of the fault-injection suite (docs/reliability.md): TestNemesis and
## TestNemesisKube for NEMESIS_DURATION each, once per entry of NEMESIS_SEEDS (0 draws a new
## seed, which the run prints); the figures of every run are appended to NEMESIS_REPORT.
## The short form runs in `make test` (e2e).
NEMESIS_DURATION ?= 10m
NEMESIS_SEEDS    ?= 0 0 0
NEMESIS_TIMEOUT  ?= 2h
NEMESIS_REPORT   ?= $(CURDIR)/.cache/nemesis/figures.jsonl
nemesis: kube-env
	@mkdir -p $(dir $(NEMESIS_REPORT))
	@for s in $(NEMESIS_SEEDS); do \
	  $(GO) test -race -count=1 -p 1 -timeout $(NEMESIS_TIMEOUT) ./test/e2e/ -run '^TestNemesis(Kube)?$$' -v \
	    -args -nemesis.seed=$$s -nemesis.duration=$(NEMESIS_DURATION) -nemesis.report=$(NEMESIS_REPORT) || exit 1; \
	done

## fuzz: a longer fuzz run of every fuzz target (FUZZTIME each).
FUZZTIME ?= 60s
fuzz:
	@for p in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
	    echo "== $$p $$f"; $(GO) test $$p -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

clean:
	rm -rf bin .cache/kube .cache/helm

## image: the container image (needs a Docker engine; CI checks its properties without one,
## see docs/image.md).
image:
	docker build --build-arg VERSION=$(VERSION) -t raft-elector:$(VERSION) .
