package main

import (
	"fmt"
	"io"
	"os"

	"github.com/mattn/go-isatty"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/fieldsync/fieldsync/agent"
)

// progressView shows the progress of a running sync for `sync --wait`.
type progressView interface {
	// update shows the latest per-(unit, channel) progress.
	update(progress []agent.ChannelProgress)
	// close ends the display; it may be called more than once. Nothing
	// else may be written to the output before it returns.
	close()
}

// newProgressView returns progress bars when w is a terminal and plain is
// false, else the line view ("progress <unit> <channel> <received>/<expected>")
// that scripts and tests parse.
func newProgressView(w io.Writer, plain bool) progressView {
	if f, ok := w.(*os.File); ok && !plain && showsBars(f) {
		return newBarView(f, 0)
	}
	return &lineView{w: w, printed: map[string]string{}}
}

// showsBars reports whether bars can be drawn on f: a terminal (or a
// Cygwin/MSYS pty) that is not "dumb" and knows its size (mpb draws no
// line on a terminal of 0 rows).
func showsBars(f *os.File) bool {
	switch {
	case os.Getenv("TERM") == "dumb":
		return false
	case isatty.IsCygwinTerminal(f.Fd()):
		return true
	case !isatty.IsTerminal(f.Fd()):
		return false
	}
	cols, rows, err := term.GetSize(int(f.Fd()))
	return err == nil && cols > 0 && rows > 0
}

// lineView prints a line per (unit, channel) whose progress changed.
type lineView struct {
	w       io.Writer
	printed map[string]string
}

func (v *lineView) update(progress []agent.ChannelProgress) {
	for _, p := range progress {
		k, line := unitLabel(p.Unit)+"/"+string(p.Channel), fmt.Sprintf("%d/%d", p.Received, p.Expected)
		if v.printed[k] != line {
			v.printed[k] = line
			fmt.Fprintf(v.w, "progress %s %s %s\n", unitLabel(p.Unit), p.Channel, line)
		}
	}
}

func (v *lineView) close() {}

// barView draws one progress bar per (unit, channel), redrawn in place.
type barView struct {
	p      *mpb.Progress
	bars   map[string]*mpb.Bar
	closed bool
}

// newBarView draws bars on w, which is taken to be a terminal (so that tests
// can pass a buffer); width 0 is the terminal's width.
func newBarView(w io.Writer, width int) *barView {
	p := mpb.New(mpb.WithOutput(w), mpb.ForceTTY(), mpb.WithAutoRefresh(), mpb.WithWidth(width))
	return &barView{p: p, bars: map[string]*mpb.Bar{}}
}

func (v *barView) update(progress []agent.ChannelProgress) {
	if v.closed {
		return
	}
	for _, p := range progress {
		b := v.bar(unitLabel(p.Unit) + " " + string(p.Channel))
		if p.Done {
			// Nothing remains: what was received is the total.
			b.SetTotal(int64(p.Received), true)
			continue
		}
		b.SetTotal(int64(p.Expected), false)
		b.SetCurrent(int64(p.Received))
	}
}

// bar returns the bar labelled label, adding it below the others if new.
func (v *barView) bar(label string) *mpb.Bar {
	if b, ok := v.bars[label]; ok {
		return b
	}
	// Total 0: the bar completes only when update says the channel is done.
	b := v.p.AddBar(0,
		mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(
			decor.CountersNoUnit("%d/%d", decor.WCSyncWidth),
			decor.OnComplete(decor.Name(""), " done"),
		),
	)
	v.bars[label] = b
	return b
}

// close leaves unfinished bars as they are and waits for the last frame.
func (v *barView) close() {
	if v.closed {
		return
	}
	v.closed = true
	for _, b := range v.bars {
		b.Abort(false)
	}
	v.p.Wait()
}
