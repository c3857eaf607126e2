# The README's commands. `make test` is what CI runs.
.PHONY: demo test test-large bench bench-initial-sync bench-writes bench-apply bench-sse bench-connect bench-feed bench-documents bench-consumers fuzz fuzz-long build cross images compose-up compose-down

demo:
	go run ./cmd/broker-embed demo

test:
	go test -race -count=1 -timeout 30m ./...

# Tests that build large stores at full size (without the race detector,
# which makes make test run them smaller): the 100,000-change staged
# download with reads and writes going on.
test-large:
	go test -count=1 -timeout 30m -run 'LargeStagedDownload' ./agent

build:
	go build -o bin/ ./cmd/...

# The container images: both programs built static (CGO_ENABLED=0) into
# bin/linux and copied into empty images (see Dockerfile); nothing is
# pulled. docker-compose.yml runs them: make compose-up.
IMAGE_TAG ?= dev

images:
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags='-s -w' -o bin/linux/ ./cmd/broker-embed ./cmd/device-agent
	docker build -q -f Dockerfile --target broker -t fieldsync/broker:$(IMAGE_TAG) bin/linux
	docker build -q -f Dockerfile --target agent -t fieldsync/agent:$(IMAGE_TAG) bin/linux

# Three broker nodes as a cluster, the keys and device credentials, demo
# data and two device agents (docker-compose.yml); waits until every
# service is healthy. compose-down removes them and their volumes.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo docker compose || echo docker-compose)

compose-up: images
	$(COMPOSE) up -d
	COMPOSE="$(COMPOSE)" deploy/compose/wait-healthy 180

compose-down:
	$(COMPOSE) down -v

cross:
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 go build -o bin/device-agent-amd64.exe ./cmd/device-agent
	GOOS=windows GOARCH=arm64 CGO_ENABLED=0 go build -o bin/device-agent-arm64.exe ./cmd/device-agent

# Fuzz targets, one after another (go test -fuzz takes one target at a
# time): the envelope decoder, both subject parsers, the body validator and
# ingest's upload handler (against a real embedded broker). Seeds live in
# each package's testdata/fuzz/<Target>/; a crash found is written there
# too and then runs in make test. `make fuzz` is the short run,
# `make fuzz-long` gives every target FUZZTIME (default 5 minutes).
FUZZ_TARGETS = events:FuzzDecode events:FuzzParseSubject events:FuzzValidateBody ingest:FuzzIngester_Decide
FUZZTIME ?= 5m

fuzz:
	go test ./events -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 60s
	go test ./events -run '^$$' -fuzz '^FuzzParseSubject$$' -fuzztime 30s
	go test ./events -run '^$$' -fuzz '^FuzzValidateBody$$' -fuzztime 60s
	go test ./ingest -run '^$$' -fuzz '^FuzzIngester_Decide$$' -fuzztime 60s

fuzz-long:
	set -e; for t in $(FUZZ_TARGETS); do \
		go test ./$${t%%:*} -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -timeout 0; \
	done

bench: bench-initial-sync bench-writes bench-apply bench-sse bench-connect bench-feed bench-documents bench-consumers

# Initial sync of 1,000,000 records against the raw consume rate (TCP) and
# the fastest raw SQLite bulk load; prints the figures next to their limits.
bench-initial-sync:
	go run ./cmd/fsbench initial-sync --records 1000000

# POST /v1/records -> shown accepted on the agent's API, 10 agents in their
# own processes, 1,000 writes/s open loop; lost/doubled checked on the
# server; then max ingest throughput.
# One integration reading 1,000,000 changes through package feed, next to
# raw JetStream consumes of the same stream, in one run.
bench-feed:
	go run ./cmd/fsbench feed

bench-writes:
	go run ./cmd/fsbench writes

# One 200 MB document and 1,000 x 100 KB documents downloaded through the
# agent's local API, next to raw object-store gets of the same objects in
# the same run (median of 3); target agent >= 0.8 of raw for the large one.
bench-documents:
	go run ./cmd/fsbench documents

# Device durables at fleet size on a 3-node cluster in one process:
# 10,000 devices' durables as one replica in memory (the candidate) next to
# 1,000 devices' as this build makes them (replicated, file): Raft groups per node against
# NATS's ~2,000 guidance, memory per device, idle CPU and API requests.
bench-consumers:
	go run ./cmd/fsbench consumers --devices 10000 --r3-devices 1000

# Apply of 100,000 staged changes over 1,000,000 records through the local
# HTTP API: the user's wait, the background merge against raw SQLite, reads
# and write -> visible meanwhile.
bench-apply:
	go run ./cmd/fsbench apply

# 1,000 devices connecting with their own credentials (auth on) next to the
# same without auth: time to all connected and the broker's CPU.
bench-connect:
	go run ./cmd/fsbench connect --devices 1000

# 20 idle status streams on a 1,000,000-record device: the process's CPU
# share over 10 s (limit 5% of a core); make test runs it on 100,000.
bench-sse:
	FS_SSE_RECORDS=1000000 go test ./localapi -run '^TestHandler_Stream_IdleClientsCostNoCPU$$' -count=1 -v -timeout 20m
