package publish

import (
	"context"
	"slices"
)

// Caller is who sent an HTTP publish request, as the server's
// authentication found it (see [WithCaller]): an integration and the org
// units it may publish to.
type Caller struct {
	// Name of the integration (for logs).
	Name string
	// Units it may publish to. The tenant-wide admin data (empty org unit)
	// is not among them: it is published by the operator's tools.
	Units []string
	// AnyUnit lets the caller publish anywhere, the tenant-wide data
	// included (the broker's auth: none mode).
	AnyUnit bool
}

// May reports whether c may publish to unit.
func (c Caller) May(unit string) bool {
	return c.AnyUnit || (unit != "" && slices.Contains(c.Units, unit))
}

type callerKey struct{}

// WithCaller returns ctx carrying the authenticated caller of an HTTP
// request; [Service.ServeHTTP] refuses requests without one.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller in ctx, if any.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
