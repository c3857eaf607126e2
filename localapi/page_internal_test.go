package localapi

import (
	"bytes"
	"testing"
)

// TestScriptHash_LineEnds: a Windows checkout (CRLF) serves a page whose
// script the browser still accepts: browsers hash it with LF line ends.
func TestScriptHash_LineEnds(t *testing.T) {
	crlf := bytes.ReplaceAll(page, []byte("\n"), []byte("\r\n"))
	if got, want := scriptHash(crlf), scriptHash(page); got != want {
		t.Fatalf("script hash of the CRLF page %s, want %s", got, want)
	}
}
