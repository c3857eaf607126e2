//go:build windows

package localapi

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/windows"
)

// secureDir creates dir if needed, refuses one another account owns
// (ProgramData lets any user create folders), and replaces its inherited
// ACL (ProgramData is readable by all users) with a protected one that
// files created in it inherit: full access for the user running the
// agent, SYSTEM and Administrators, read access for readers.
func secureDir(dir string, readers []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("localapi: token folder: %w", err)
	}
	// A junction or link planted in its place would make us secure (and
	// write into) whatever it points at.
	if fi, err := os.Lstat(dir); err != nil || fi.Mode()&(os.ModeSymlink|os.ModeIrregular) != 0 {
		return fmt.Errorf("localapi: token folder %s is a link or junction (or unreadable: %v): refusing it", dir, err)
	}
	if err := checkOwner(dir); err != nil {
		return fmt.Errorf("%w: remove the folder or give it to this account", err)
	}
	return setACL(dir, readers, "OICI")
}

// restrictFile gives path the same protected ACL, for a file.
func restrictFile(path string, readers []string) error { return setACL(path, readers, "") }

func setACL(path string, readers []string, inherit string) error {
	me, err := currentUser()
	if err != nil {
		return err
	}
	sddl := fmt.Sprintf("D:P(A;%[1]s;FA;;;SY)(A;%[1]s;FA;;;BA)(A;%[1]s;FA;;;%[2]s)", inherit, me)
	for _, r := range readers {
		sid, err := readerSID(r)
		if err != nil {
			return err
		}
		// Readers may read the folder's list and the token file (which gets
		// its own ACL), not inherit access to the database or the log.
		sddl += fmt.Sprintf("(A;;FR;;;%s)", sid)
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("localapi: token: %w", err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("localapi: token: %w", err)
	}
	err = windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("localapi: token: restrict %s: %w", path, err)
	}
	return nil
}

// checkOwner refuses path unless the user running the agent, SYSTEM or
// Administrators own it.
func checkOwner(path string) error {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("localapi: token: owner of %s: %w", path, err)
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return fmt.Errorf("localapi: token: owner of %s: %w", path, err)
	}
	me, err := currentUser()
	if err != nil {
		return err
	}
	if owner.String() == me {
		return nil
	}
	for _, t := range []windows.WELL_KNOWN_SID_TYPE{windows.WinLocalSystemSid, windows.WinBuiltinAdministratorsSid} {
		if sid, err := windows.CreateWellKnownSid(t); err == nil && owner.Equals(sid) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s belongs to %s", errForeignOwner, path, owner)
}

func currentUser() (string, error) {
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return "", fmt.Errorf("localapi: token: current user: %w", err)
	}
	return user.User.Sid.String(), nil
}

// readerSID resolves an account name (DOMAIN\user, user) or SID string.
func readerSID(r string) (string, error) {
	if strings.HasPrefix(strings.ToUpper(r), "S-") {
		sid, err := windows.StringToSid(r)
		if err != nil {
			return "", fmt.Errorf("localapi: token reader %q: %w", r, err)
		}
		return sid.String(), nil
	}
	sid, _, _, err := windows.LookupSID("", r)
	if err != nil {
		return "", fmt.Errorf("localapi: token reader %q: %w", r, err)
	}
	return sid.String(), nil
}
