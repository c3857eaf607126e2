package agent

import (
	"context"

	"github.com/fieldsync/fieldsync/store"
)

// metaRefreshMode holds the refresh-mode toggle once the user changed it;
// it then overrides the config file. As a device setting it survives
// every wipe.
const metaRefreshMode = store.SettingPrefix + "refresh_mode"

// RefreshMode reports whether syncs are non-blocking (staged until Apply).
func (a *Agent) RefreshMode() bool { return a.refresh.Load() }

// SetRefreshMode switches non-blocking sync on or off. It takes effect at
// the next sync; a sync already running keeps its mode.
func (a *Agent) SetRefreshMode(ctx context.Context, on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	if err := a.db.SetMeta(ctx, metaRefreshMode, v); err != nil {
		return err
	}
	a.refresh.Store(on)
	a.statusChanged()
	a.log.Info("refresh mode switched", "on", on, "effective", "next sync")
	return nil
}
