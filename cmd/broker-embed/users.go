package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldsync/fieldsync/broker"
	"github.com/fieldsync/fieldsync/natsauth"
)

// dataDirFlags locate a broker's data dir: --data-dir, else the data_dir
// of --config, else the default (./fieldsync-data).
type dataDirFlags struct {
	config, dataDir string
}

func (f *dataDirFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.config, "config", "", "the broker's YAML configuration (for its data_dir)")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "the broker's data dir (overrides --config)")
}

func (f *dataDirFlags) brokerConfig() (broker.Config, error) {
	cfg := broker.Config{}.WithDefaults()
	if f.config != "" {
		var err error
		if cfg, err = broker.LoadConfig(f.config); err != nil {
			return cfg, err
		}
	}
	if f.dataDir != "" {
		cfg.DataDir = f.dataDir
	}
	return cfg, nil
}

// authority opens the operator side of the broker's data dir; it must
// exist (the broker ran once with authentication on).
func (f *dataDirFlags) authority() (*natsauth.Authority, error) {
	cfg, err := f.brokerConfig()
	if err != nil {
		return nil, err
	}
	return natsauth.OpenExisting(cfg.AuthDir())
}

// newUsersCmd returns `device` or `integration` with add, revoke and list.
// They work on the data dir whether the broker runs or not: issuing needs
// no broker (any user the tenant account key signed is accepted), and a
// revocation is written to the tenant account JWT in the data dir, then
// sent to the running broker (found through the URL it records in the data
// dir at start) as a claims update, signed with the system account key
// kept there; a stopped broker loads it at its next start.
func newUsersCmd(kind natsauth.Kind, short string) *cobra.Command {
	cmd := &cobra.Command{Use: string(kind), Short: short}
	cmd.AddCommand(newUserAddCmd(kind), newUserRevokeCmd(kind), newUserListCmd(kind))
	return cmd
}

func idFlag(kind natsauth.Kind) string {
	if kind == natsauth.KindDevice {
		return "id"
	}
	return "name"
}

func newUserAddCmd(kind natsauth.Kind) *cobra.Command {
	var f dataDirFlags
	var id, out, tokenOut, person string
	var units []string
	var ifMissing bool
	flag := idFlag(kind)
	short := "Issue credentials (a .creds file, mode 0600) for a new " + string(kind)
	if kind == natsauth.KindIntegration {
		short += ", and its HTTP publish API token (a .token file next to it, mode 0600)"
	}
	cmd := &cobra.Command{
		Use:   "add --" + flag + " X (--org U[,U...] | --user P) --out FILE",
		Short: short,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind == natsauth.KindDevice && len(units) == 0 && person == "" {
				return errors.New("--org or --user: a device needs org units, or a user whose assignments give them")
			}
			if _, err := os.Stat(out); err == nil && ifMissing {
				fmt.Fprintf(cmd.OutOrStdout(), "%s exists: %s %s already issued, nothing to do\n", out, kind, id)
				return nil
			}
			a, err := f.authority()
			if err != nil {
				return err
			}
			files := []string{out}
			if kind == natsauth.KindIntegration {
				if tokenOut == "" {
					tokenOut = strings.TrimSuffix(out, ".creds") + ".token"
				}
				files = append(files, tokenOut)
			}
			u, err := issueUser(a, kind, id, units, person, files)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s %s (org units %s, key %s): credentials in %s\n",
				kind, u.ID, strings.Join(u.OrgUnits, ","), u.PublicKey, out)
			if kind == natsauth.KindIntegration {
				fmt.Fprintf(cmd.OutOrStdout(), "HTTP publish API token (Authorization: Bearer ...) in %s; the broker keeps only its hash\n", tokenOut)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&id, flag, "", "the "+string(kind)+"'s "+flag+" (required)")
	cmd.Flags().StringSliceVar(&units, "org", nil, "org units it may read (comma separated); the tenant-wide admin data always")
	cmd.Flags().StringVar(&out, "out", "", "credentials file to write (must not exist; required)")
	cmd.Flags().BoolVar(&ifMissing, "if-missing", false, "do nothing if --out exists (a job that runs at every start, as in docker-compose.yml)")
	if kind == natsauth.KindDevice {
		cmd.Flags().StringVar(&person, "user", "", "bind the device to this user of the Admin data: the user's assignments decide its org units")
	}
	if kind == natsauth.KindIntegration {
		cmd.Flags().StringVar(&tokenOut, "token-out", "", "token file to write (must not exist; default --out with .token for .creds)")
	}
	cmd.MarkFlagRequired(flag)
	cmd.MarkFlagRequired("out")
	return cmd
}

// issueUser creates files (none may exist; mode 0600), issues the user and
// writes its credentials to files[0] and, for an integration, its token to
// files[1]. On any error no file is left behind.
func issueUser(a *natsauth.Authority, kind natsauth.Kind, id string, units []string, person string, files []string) (u natsauth.User, err error) {
	var open []*os.File
	defer func() {
		for i, fh := range open {
			if cerr := fh.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(files[i])
			}
		}
	}()
	for _, name := range files {
		fh, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return u, fmt.Errorf("--out: %w", err)
		}
		open = append(open, fh)
	}
	var creds []byte
	var token string
	if kind == natsauth.KindIntegration {
		creds, token, u, err = a.AddIntegration(id, units)
	} else {
		var opts []natsauth.DeviceOption
		if person != "" {
			opts = append(opts, natsauth.ForPerson(person))
		}
		creds, u, err = a.AddDevice(id, units, opts...)
	}
	if err != nil {
		return u, err
	}
	if _, err = open[0].Write(creds); err == nil && token != "" {
		_, err = open[1].WriteString(token + "\n")
	}
	return u, err
}

func newUserRevokeCmd(kind natsauth.Kind) *cobra.Command {
	var f dataDirFlags
	var id string
	flag := idFlag(kind)
	cmd := &cobra.Command{
		Use:   "revoke --" + flag + " X",
		Short: "Revoke a " + string(kind) + "'s credentials; a running broker disconnects it at once",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := f.authority()
			if err != nil {
				return err
			}
			u, err := a.Revoke(kind, id)
			if err != nil {
				return err
			}
			return pushRevocation(cmd.Context(), cmd.OutOrStdout(), a, u)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&id, flag, "", "the "+string(kind)+"'s "+flag+" (required)")
	cmd.MarkFlagRequired(flag)
	return cmd
}

// pushRevocation tells the running broker, if there is one, of the
// revocation just written.
func pushRevocation(ctx context.Context, out io.Writer, a *natsauth.Authority, u natsauth.User) error {
	url := a.BrokerURL()
	if url != "" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := a.PushAccount(ctx, url)
		if err == nil {
			fmt.Fprintf(out, "revoked %s %s: the broker at %s disconnected it and refuses its credentials\n", u.Kind, u.ID, url)
			return nil
		}
		if !errors.Is(err, natsauth.ErrUnreachable) {
			return fmt.Errorf("revoked %s %s in the data dir, but the running broker at %s did not take it (it will at its next start): %w", u.Kind, u.ID, url, err)
		}
	}
	fmt.Fprintf(out, "revoked %s %s: the broker is not running; it refuses the credentials from its next start\n", u.Kind, u.ID)
	return nil
}

func newUserListCmd(kind natsauth.Kind) *cobra.Command {
	var f dataDirFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the " + string(kind) + "s issued, revoked ones included",
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := f.authority()
			if err != nil {
				return err
			}
			all, err := a.Users()
			if err != nil {
				return err
			}
			users := []natsauth.User{}
			for _, u := range all {
				if u.Kind == kind {
					users = append(users, u)
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(users)
			}
			return printUsers(cmd.OutOrStdout(), users)
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printUsers(out io.Writer, users []natsauth.User) error {
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tORG UNITS\tISSUED\tREVOKED\tPUBLIC KEY")
	for _, u := range users {
		revoked := "-"
		if u.RevokedAt != nil {
			revoked = u.RevokedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.ID, strings.Join(u.OrgUnits, ","), u.IssuedAt.Format(time.RFC3339), revoked, u.PublicKey)
	}
	return w.Flush()
}
