//go:build race

package localapi_test

// raceEnabled: the race detector slows SQLite (pure Go, unsafe pointers
// checked) tens of times; tests that build large stores build smaller ones.
const raceEnabled = true
