# The README's commands. `make test` is what CI runs.
.PHONY: demo test bench bench-initial-sync bench-writes bench-apply fuzz build cross

demo:
	go run ./cmd/broker-embed demo

test:
	go test -race -count=1 -timeout 30m ./...

build:
	go build -o bin/ ./cmd/...

cross:
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 go build -o bin/device-agent-amd64.exe ./cmd/device-agent
	GOOS=windows GOARCH=arm64 CGO_ENABLED=0 go build -o bin/device-agent-arm64.exe ./cmd/device-agent

fuzz:
	go test ./events -run '^$$' -fuzz FuzzDecode -fuzztime 60s
	go test ./events -run '^$$' -fuzz FuzzParseSubject -fuzztime 30s
	go test ./events -run '^$$' -fuzz FuzzValidateBody -fuzztime 60s

bench: bench-initial-sync bench-writes bench-apply

# Initial sync of 1,000,000 records; prints the figures next to their limits.
bench-initial-sync:
	go run ./cmd/fsbench initial-sync --records 1000000

# Write latency at 1,000 writes/s from 10 devices, and max ingest throughput.
bench-writes:
	go run ./cmd/fsbench writes

# Apply of 100,000 staged changes over 1,000,000 records: the user's wait,
# the background merge against raw SQLite, reader latency meanwhile.
bench-apply:
	go run ./cmd/fsbench apply
