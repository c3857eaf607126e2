package agent

import (
	"os"
	"path/filepath"
	"runtime"
)

// DefaultDataDir is where the agent keeps its data when data_dir is not
// set: the per-machine data folder on Windows (%ProgramData%\fieldsync\agent),
// ./fieldsync-agent elsewhere.
func DefaultDataDir() string {
	if runtime.GOOS == "windows" {
		if pd := os.Getenv("ProgramData"); pd != "" {
			return filepath.Join(pd, "fieldsync", "agent")
		}
	}
	return "fieldsync-agent"
}
