package agent

import "github.com/fieldsync/fieldsync/store"

// SetBeforeMarkSent installs a hook that runs between publishing an upload
// and recording it as sent. It exists for crash tests in other packages
// (e2e) that kill the agent in exactly that window.
func SetBeforeMarkSent(s *Syncer, f func(store.Mutation)) { s.beforeMarkSent = f }
