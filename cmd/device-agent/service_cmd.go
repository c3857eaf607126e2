package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/kardianos/service"
	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/agent"
)

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service install|uninstall|start|stop|status",
		Short: "Manage the agent as a system service (a Windows service; systemd or launchd elsewhere)",
		Long: `Manage the agent as a system service named ` + serviceName + `.

install records the absolute --config path: the service runs
"device-agent run --config <path>" (on Windows the default config is
%ProgramData%\fieldsync\device-agent.yaml). install, uninstall, start and
stop need an administrator (root elsewhere).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return fmt.Errorf("unknown service action %q (want one of: %s)", args[0], strings.Join(serviceActions, ", "))
		},
	}
	short := map[string]string{
		"install":   "Install the service (starting with the system), running this executable with --config",
		"uninstall": "Stop and remove the service",
		"start":     "Start the service",
		"stop":      "Stop the service",
		"status":    "Say whether the service is installed and running",
	}
	for _, action := range serviceActions {
		cmd.AddCommand(&cobra.Command{
			Use:   action,
			Short: short[action],
			Args:  cobra.NoArgs,
			RunE:  func(cmd *cobra.Command, _ []string) error { return serviceCmd(cmd, g, action) },
		})
	}
	return cmd
}

// serviceCmd runs action and prints the resulting status.
func serviceCmd(cmd *cobra.Command, g *globals, action string) error {
	cfgPath, err := filepath.Abs(g.config)
	if err != nil {
		return err
	}
	status, err := controlService(cfgPath, action)
	if err != nil {
		return fmt.Errorf("service %s: %w", action, explainServiceError(err))
	}
	if g.json {
		return printJSON(cmd.OutOrStdout(), map[string]string{"action": action, "status": status})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", serviceName, strings.ReplaceAll(status, "_", " "))
	if action == "install" {
		fmt.Fprintf(cmd.OutOrStdout(), "it runs: device-agent run --config %s\n", cfgPath)
	}
	return nil
}

// controlService runs action on the service of the config file cfgPath
// and returns the service's status after it.
func controlService(cfgPath, action string) (string, error) {
	s, err := service.New(newProgram(cfgPath, false), serviceConfig(cfgPath))
	if err != nil {
		return "", err
	}
	switch action {
	case "install":
		if _, err := agent.LoadConfig(cfgPath); err != nil {
			return "", fmt.Errorf("%w (write the config before installing the service)", err)
		}
		return "installed", s.Install()
	case "uninstall":
		if st, err := s.Status(); err == nil && st == service.StatusRunning {
			s.Stop() // Windows only removes a service once it stopped
		}
		return "uninstalled", s.Uninstall()
	case "start":
		return "started", s.Start()
	case "stop":
		return "stopped", s.Stop()
	case "status":
		return serviceStatus(s)
	}
	return "", fmt.Errorf("unknown service action %q", action)
}

func serviceStatus(s service.Service) (string, error) {
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled), err != nil && sysvScriptMissing(s):
		return "not_installed", nil
	case err != nil:
		return "", fmt.Errorf("the %s service manager gave no status: %w", s.Platform(), err)
	case st == service.StatusRunning:
		return "running", nil
	case st == service.StatusStopped:
		return "stopped", nil
	}
	return "unknown", nil
}

// sysvScriptMissing reports whether s is a System V init service without
// its script: `service NAME status` then fails with no useful error.
func sysvScriptMissing(s service.Service) bool {
	if s.Platform() != "unix-systemv" {
		return false
	}
	_, err := os.Stat("/etc/init.d/" + serviceName)
	return errors.Is(err, os.ErrNotExist)
}

// explainServiceError adds what to do to the errors people will meet.
func explainServiceError(err error) error {
	admin := "root"
	if runtime.GOOS == "windows" {
		admin = "an administrator"
	}
	switch {
	case errors.Is(err, service.ErrNoServiceSystemDetected):
		return fmt.Errorf("no service manager (Windows service manager, systemd, launchd...) found on this system; run the agent with: device-agent run")
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w (run it as %s)", err, admin)
	}
	return err
}
