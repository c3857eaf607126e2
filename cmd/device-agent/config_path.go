package main

import (
	"os"
	"path/filepath"
	"runtime"
)

// defaultConfigPath is the --config default when $FIELDSYNC_AGENT_CONFIG is
// unset: %ProgramData%\fieldsync\device-agent.yaml on Windows, where the
// service and every user of the machine find it, and device-agent.yaml in
// the working directory elsewhere.
func defaultConfigPath() string {
	return configPathFor(runtime.GOOS, os.Getenv("ProgramData"))
}

func configPathFor(goos, programData string) string {
	if goos == "windows" && programData != "" {
		return filepath.Join(programData, "fieldsync", "device-agent.yaml")
	}
	return "device-agent.yaml"
}
