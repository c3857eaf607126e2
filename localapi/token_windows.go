//go:build windows

package localapi

import (
	"fmt"

	"golang.org/x/sys/windows"
)

// restrictFile replaces path's inherited ACL (ProgramData is readable by
// all users) with one that grants access to the user running the agent,
// SYSTEM and Administrators only.
func restrictFile(path string) error {
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return fmt.Errorf("localapi: token: current user: %w", err)
	}
	sddl := fmt.Sprintf("D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;%s)", user.User.Sid.String())
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
