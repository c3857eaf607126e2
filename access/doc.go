// Package access owns who may do what, as the tenant's Admin data says:
// user assignments (a user, in an org unit, with a role) decide which org
// units a user's device carries, and role permissions decide which record
// kinds a role may write. [Directory] is a pure state machine fed with the
// Admin channel's changes; it does no I/O. The broker follows the Admin
// data into a Directory and uses it to issue device permissions
// (assignments, see the seeds' initial sync of "Role Permissions, and User
// Assignments"), to check sign-ins and to let ingest refuse writes a role
// may not make.
package access
