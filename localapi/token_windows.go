//go:build windows

package localapi

import (
	"fmt"
	"strings"

	"golang.org/x/sys/windows"
)

// restrictFile replaces path's inherited ACL (ProgramData is readable by
// all users) with one that grants full access to the user running the
// agent, SYSTEM and Administrators, and read access to readers (account
// names or SIDs).
func restrictFile(path string, readers []string) error {
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return fmt.Errorf("localapi: token: current user: %w", err)
	}
	sddl := fmt.Sprintf("D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;%s)", user.User.Sid.String())
	for _, r := range readers {
		sid, err := readerSID(r)
		if err != nil {
			return err
		}
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
