//go:build !race

package localapi_test

// raceEnabled: see race_on_test.go.
const raceEnabled = false
