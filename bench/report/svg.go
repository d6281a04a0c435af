package main

import (
	"fmt"
	"html"
	"strings"
)

// colors for the targets, in order of appearance.
var colors = []string{"#9e9e9e", "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f"}

// chartFigures are the chart's groups: the headline figures that ran.
func (rep *report) chartFigures() []figure {
	var out []figure
	add := func(kind, suffix, title string) {
		if f, ok := rep.figureOf(kind, suffix); ok {
			f.title = title
			out = append(out, f)
		}
	}
	if k := rep.largestHold(false); k != "" {
		add(k, "idle RSS per connection", "idle RSS per conn")
	}
	if k := rep.largestHold(true); k != "" {
		add(k, "idle RSS per connection", "idle RSS per wss conn")
	}
	add("echo64", ": msg/s", "echo 64 B")
	add("echo4k", ": msg/s", "echo 4 KiB")
	add("rate", ": p99 µs", "p99 at a fixed rate")
	add("hs_ws", ": per second", "handshakes ws://")
	add("hs_wss", ": per second", "handshakes wss://")
	add("echo64", "per 100k round trips", "CPU per 100k msgs (64 B)")
	for i := range out {
		if out[i].unit == "/s" {
			out[i].unit = "handshakes/s"
		}
	}
	return out
}

// svg draws a grouped bar chart of the medians over rounds: one group per
// figure, one bar per target. Each group is scaled to its own largest
// value (the figures have different units); the value is written above
// each bar.
func (rep *report) svg() string {
	const (
		groupW  = 150.0
		left    = 20.0
		top     = 70.0
		plotH   = 240.0
		bottom  = 70.0
		barGap  = 2.0
		padding = 16.0
	)
	targets := rep.ran()
	chartOrder := rep.chartFigures()
	n := max(len(targets), 1)
	barW := (groupW - 2*padding - float64(n-1)*barGap) / float64(n)
	width := left*2 + groupW*float64(len(chartOrder))
	height := top + plotH + bottom

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="16" font-weight="bold">wsproxy and its peers: medians of %d round(s) (each group scaled to its largest value)</text>`+"\n", left, rep.rounds)

	// Legend.
	x := left
	for i, t := range targets {
		fmt.Fprintf(&b, `<rect x="%.0f" y="36" width="12" height="12" fill="%s"/><text x="%.0f" y="47" font-size="12">%s</text>`+"\n",
			x, colors[i%len(colors)], x+16, html.EscapeString(t.name))
		x += 24 + 7*float64(len(t.name))
	}

	base := top + plotH
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#333"/>`+"\n", left, base, width-left, base)
	for g, m := range chartOrder {
		gx := left + float64(g)*groupW
		var vals []float64
		maxV := 0.0
		for _, t := range targets {
			var v float64
			if s := t.stat(m); s.ok() {
				v = s.median()
			}
			vals = append(vals, v)
			maxV = max(maxV, v)
		}
		for i, v := range vals {
			bx := gx + padding + float64(i)*(barW+barGap)
			if v == 0 || maxV == 0 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle" fill="#777">n/a</text>`+"\n", bx+barW/2, base-4)
				continue
			}
			h := v / maxV * (plotH - 20)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>`+"\n",
				bx, base-h, barW, h, colors[i%len(colors)], html.EscapeString(targets[i].name), html.EscapeString(m.title), fmt.Sprintf(m.format, v), m.unit)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="9" text-anchor="start" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n",
				bx+barW/2+3, base-h-3, bx+barW/2+3, base-h-3, compact(v, m.format))
		}
		better := "higher is better"
		if m.lower {
			better = "lower is better"
		}
		cx := gx + groupW/2
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`+"\n", cx, base+18, html.EscapeString(m.title))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="#555">%s, %s</text>`+"\n", cx, base+32, html.EscapeString(m.unit), better)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// compact formats v for a bar label: 12345 as 12.3k.
func compact(v float64, format string) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf(format, v)
	}
}
