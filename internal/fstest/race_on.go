//go:build race

package fstest

// RaceEnabled: the race detector slows SQLite (pure Go, unsafe pointers
// checked) tens of times; tests that build large stores build smaller ones
// under it and say so.
const RaceEnabled = true
