package natsauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrUnreachable: no broker answered at the URL (it is not running); the
// change is in the data dir and takes effect when the broker starts.
var ErrUnreachable = errors.New("natsauth: broker not reachable")

// PushAccount sends the tenant account's current JWT to the broker at url
// as a claims update ($SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE), connecting
// as a short-lived system account user signed with the system account key
// of this data dir. The server applies it at once: revoked users are
// disconnected and cannot connect again. A broker that cannot be reached
// gives [ErrUnreachable].
func (a *Authority) PushAccount(ctx context.Context, url string) error {
	userJWT, seed, err := a.systemUser()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, nats.Name("fieldsync-admin"), nats.Timeout(3*time.Second), nats.NoReconnect(),
		nats.UserJWTAndSeed(userJWT, seed))
	if errors.Is(err, nats.ErrNoServers) {
		return fmt.Errorf("%w at %s: %v", ErrUnreachable, url, err)
	}
	if err != nil {
		return fmt.Errorf("natsauth: connect %s: %w", url, err)
	}
	defer nc.Close()
	return PushAccountOn(ctx, nc, a.TenantAccount(), a.TenantJWT())
}

// SystemUser returns a short-lived (5 min) system account user, for a
// process that connects to its own embedded server to push claims updates
// with [PushAccountOn].
func (a *Authority) SystemUser() (userJWT, seed string, err error) { return a.systemUser() }

// PushAccountOn sends an account JWT as a claims update on nc, a system
// account connection, and checks the server's answer.
func PushAccountOn(ctx context.Context, nc *nats.Conn, account, accountJWT string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	msg, err := nc.RequestWithContext(ctx, "$SYS.REQ.ACCOUNT."+account+".CLAIMS.UPDATE", []byte(accountJWT))
	if err != nil {
		return fmt.Errorf("natsauth: claims update: %w", err)
	}
	var resp struct {
		Data *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"data"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("natsauth: claims update answer %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("natsauth: claims update refused: %s", resp.Error.Description)
	}
	if resp.Data == nil || resp.Data.Message != "jwt updated" {
		return fmt.Errorf("natsauth: claims update not applied: %s", msg.Data)
	}
	return nil
}
