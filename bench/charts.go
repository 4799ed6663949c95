package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The charts: PNGs of 720 px width (readable where a README shows them),
// one horizontal row per design in report order, our designs in blue
// against the seed's in grey (the OpenTelemetry peer in amber), each bar's
// value written beside it, reference marks (the target, the seed's
// published figures, the loader's latency) dashed or black, and the legend
// in a strip under the plot, never over the data.

const (
	chartDPI   = 96
	chartWidth = 7.5 * vg.Inch
	rowHeight  = 0.36 * vg.Inch
)

var (
	colorOurs  = color.RGBA{R: 0x1f, G: 0x6f, B: 0xc5, A: 0xff}
	colorSeed  = color.RGBA{R: 0x9e, G: 0x9e, B: 0x9e, A: 0xff}
	colorPeer  = color.RGBA{R: 0xe0, G: 0x9a, B: 0x2b, A: 0xff}
	colorRef   = color.RGBA{R: 0xc6, G: 0x28, B: 0x28, A: 0xff} // the target
	colorBlack = color.RGBA{A: 0xff}
	// Sweep lines: ours in strong colours, the seed's in greys.
	oursLines = []color.Color{colorOurs, color.RGBA{R: 0x2e, G: 0x7d, B: 0x32, A: 0xff}, color.RGBA{R: 0x6a, G: 0x1b, B: 0x9a, A: 0xff}}
	seedLines = []color.Color{color.RGBA{R: 0x61, G: 0x61, B: 0x61, A: 0xff}, color.RGBA{R: 0x9e, G: 0x9e, B: 0x9e, A: 0xff}, color.RGBA{R: 0x42, G: 0x42, B: 0x42, A: 0xff}}
)

// seedPublished are the seed's delivered-per-minute figures (mission.md),
// at its 2,000 events/s.
var seedPublished = map[string]float64{SeedPool10: 83663, SeedPool100: 84042, SeedAsync: 119720}

func isOurs(name string) bool { return strings.HasPrefix(name, Batchproc) }
func isSeed(name string) bool { return strings.HasPrefix(name, "seed-") }

func designColor(name string) color.Color {
	switch {
	case isOurs(name):
		return colorOurs
	case isSeed(name):
		return colorSeed
	}
	return colorPeer
}

// chartName is a design's row label.
func chartName(name string) string {
	if name == SeedAsyncDefaultT {
		return "seed-async, Go transport"
	}
	return name
}

// Chart files.
const (
	chartDelivered = "delivered_per_min.png"
	chartCPU       = "cpu_per_million.png"
	chartLatency   = "add_latency.png"
)

// writtenChart is a chart written, for report.md to embed.
type writtenChart struct {
	File, Title string
}

// charts writes the report's PNG charts into dir. A chart that has nothing
// to show (no design finished, every latency 0) is left out, and one that
// fails is reported in errs; neither stops the report. No result, however
// degenerate, makes it panic: a panic in the plotting library becomes an
// error too.
func (r *Report) charts(dir string) (written []writtenChart, errs []error) {
	try := func(file, title string, draw func(string) (bool, error)) {
		ok, err := safeChart(func() (bool, error) { return draw(filepath.Join(dir, file)) })
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("chart %s: %w", file, err))
		case ok:
			written = append(written, writtenChart{File: file, Title: title})
		}
	}
	rows := chartRows(r.Designs)
	if len(rows) > 0 {
		try(chartDelivered, "Events delivered per minute", func(f string) (bool, error) { return r.deliveredChart(f, rows) })
		try(chartCPU, "Design CPU per million events", func(f string) (bool, error) { return r.cpuChart(f, rows) })
		try(chartLatency, "Add latency", func(f string) (bool, error) { return r.latencyChart(f, rows) })
	}
	r.limitsCharts(try)
	for _, load := range []string{LoadClosed, LoadOpen} {
		file := "sweep_" + load + ".png"
		try(file, "Delivered against the loader's latency, "+load+" loop", func(f string) (bool, error) { return r.sweepChart(f, load) })
	}
	return written, errs
}

// chartRows are the designs a chart shows: those that ran (a design that
// failed before offering anything has no figures to draw).
func chartRows(ds []DesignResult) []DesignResult {
	var rows []DesignResult
	for _, d := range ds {
		if d.Error == "" || d.Offered > 0 {
			rows = append(rows, d)
		}
	}
	return rows
}

func safeChart(f func() (bool, error)) (ok bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			ok, err = false, fmt.Errorf("plotting failed: %v", p)
		}
	}()
	return f()
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// barRow is one design's bar.
type barRow struct {
	name   string
	value  float64
	label  string
	lo, hi float64 // the range of repeated runs, drawn as an error bar when lo < hi
	ref    float64 // the seed's published figure, drawn as a black tick; 0 none
}

// hbarChart draws rows as horizontal bars, the first on top.
func hbarChart(file, title, xlabel string, rows []barRow, target float64, targetLabel string, ticks plot.Ticker, extra []legendItem) (bool, error) {
	n := len(rows)
	if n == 0 {
		return false, nil
	}
	p := newPlot(title)
	p.X.Label.Text = xlabel
	if ticks != nil {
		p.X.Tick.Marker = ticks
	}
	lo, hi := 0.0, 0.0
	names := make([]string, n)
	var labels plotter.XYLabels
	var errXY plotter.XYs
	var errs plotter.XErrors
	var seedMarks []plot.Plotter // the seed's figures, drawn over the target line
	for i, rw := range rows {
		y := float64(n - 1 - i)
		names[n-1-i] = chartName(rw.name)
		v := rw.value
		if !finite(v) {
			v = 0
		}
		bars, err := plotter.NewBarChart(plotter.Values{v}, rowHeight*0.62)
		if err != nil {
			return false, err
		}
		bars.Horizontal = true
		bars.XMin = y
		bars.Color = designColor(rw.name)
		bars.LineStyle.Width = 0
		p.Add(bars)
		lo, hi = math.Min(lo, v), math.Max(hi, v)
		labelAt := v
		if finite(rw.lo) && finite(rw.hi) && rw.lo < rw.hi {
			errXY = append(errXY, plotter.XY{X: v, Y: y})
			errs = append(errs, struct{ Low, High float64 }{Low: v - rw.lo, High: rw.hi - v})
			lo, hi = math.Min(lo, rw.lo), math.Max(hi, rw.hi)
			labelAt = math.Max(labelAt, rw.hi)
		}
		if rw.ref > 0 && finite(rw.ref) {
			tick, err := plotter.NewLine(plotter.XYs{{X: rw.ref, Y: y - 0.45}, {X: rw.ref, Y: y + 0.45}})
			if err != nil {
				return false, err
			}
			tick.LineStyle.Width = vg.Points(3)
			tick.LineStyle.Color = colorBlack
			seedMarks = append(seedMarks, tick)
			hi = math.Max(hi, rw.ref)
		}
		labels.XYs = append(labels.XYs, plotter.XY{X: labelAt, Y: y})
		labels.Labels = append(labels.Labels, rw.label)
	}
	if target > 0 && finite(target) {
		hi = math.Max(hi, target)
	}
	// The values in one column right of the bars and every reference mark,
	// where no line crosses them.
	for i := range labels.XYs {
		labels.XYs[i].X = hi
	}
	if len(errXY) > 0 {
		eb, err := plotter.NewXErrorBars(struct {
			plotter.XYs
			plotter.XErrors
		}{errXY, errs})
		if err != nil {
			return false, err
		}
		eb.LineStyle.Width = vg.Points(1.2)
		eb.CapWidth = rowHeight * 0.3
		p.Add(eb)
	}
	if target > 0 && finite(target) {
		line, err := plotter.NewLine(plotter.XYs{{X: target, Y: -0.5}, {X: target, Y: float64(n) - 0.5}})
		if err != nil {
			return false, err
		}
		line.LineStyle.Color = colorRef
		line.LineStyle.Width = vg.Points(1.5)
		line.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		p.Add(line)
		hi = math.Max(hi, target)
		extra = append([]legendItem{{targetLabel, line}}, extra...)
	}
	if lo < 0 {
		zero, err := plotter.NewLine(plotter.XYs{{X: 0, Y: -0.5}, {X: 0, Y: float64(n) - 0.5}})
		if err != nil {
			return false, err
		}
		zero.LineStyle.Width = vg.Points(0.8)
		p.Add(zero)
	}
	p.Add(seedMarks...)
	lbl, err := valueLabels(labels)
	if err != nil {
		return false, err
	}
	p.Add(lbl)
	p.NominalY(names...)
	p.Y.Min, p.Y.Max = -0.6, float64(n)-0.4
	if hi <= lo {
		hi = lo + 1
	}
	// Room on the right for the value labels.
	p.X.Min, p.X.Max = lo*1.05, hi*1.32
	if lo == 0 {
		p.X.Min = 0
	}
	p.Add(xGrid())
	rowNames := make([]string, n)
	for i, rw := range rows {
		rowNames[i] = rw.name
	}
	items := append(groupLegend(rowNames), extra...)
	return true, savePlot(file, p, chartWidth, vg.Length(n)*rowHeight+1.3*vg.Inch, items)
}

func newPlot(title string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Title.Padding = vg.Points(8)
	p.X.Label.TextStyle.Font.Size = vg.Points(11)
	p.Y.Label.TextStyle.Font.Size = vg.Points(11)
	p.X.Tick.Label.Font.Size = vg.Points(10.5)
	p.Y.Tick.Label.Font.Size = vg.Points(11)
	return p
}

func valueLabels(l plotter.XYLabels) (*plotter.Labels, error) {
	lbl, err := plotter.NewLabels(l)
	if err != nil {
		return nil, err
	}
	for i := range lbl.TextStyle {
		lbl.TextStyle[i].YAlign = text.YCenter
		lbl.TextStyle[i].Font.Size = vg.Points(10.5)
	}
	lbl.Offset = vg.Point{X: vg.Points(5)}
	return lbl, nil
}

// xGrid is a grid of vertical lines only (rows need none).
func xGrid() *plotter.Grid {
	g := plotter.NewGrid()
	g.Horizontal.Width = 0
	g.Vertical.Color = color.Gray{Y: 0xe0}
	return g
}

// legendItem is one legend entry.
type legendItem struct {
	text  string
	thumb plot.Thumbnailer
}

// swatch is a legend thumbnail: a filled box.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	r := c.Rectangle
	pad := (r.Max.Y - r.Min.Y) * 0.15
	c.FillPolygon(s.c, []vg.Point{{X: r.Min.X, Y: r.Min.Y + pad}, {X: r.Max.X, Y: r.Min.Y + pad}, {X: r.Max.X, Y: r.Max.Y - pad}, {X: r.Min.X, Y: r.Max.Y - pad}})
}

// tickThumb is the legend thumbnail of the seed's published figure: a
// black vertical tick.
type tickThumb struct{}

func (tickThumb) Thumbnail(c *draw.Canvas) {
	r := c.Rectangle
	x := (r.Min.X + r.Max.X) / 2
	c.StrokeLine2(draw.LineStyle{Color: colorBlack, Width: vg.Points(2.5)}, x, r.Min.Y, x, r.Max.Y)
}

// groupLegend names the colours of the groups present among names.
func groupLegend(names []string) []legendItem {
	var ours, seed, peer bool
	for _, n := range names {
		switch {
		case isOurs(n):
			ours = true
		case isSeed(n):
			seed = true
		default:
			peer = true
		}
	}
	var items []legendItem
	if ours {
		items = append(items, legendItem{"batchproc (ours)", swatch{colorOurs}})
	}
	if seed {
		items = append(items, legendItem{"the seed's designs", swatch{colorSeed}})
	}
	if peer {
		items = append(items, legendItem{"OpenTelemetry sdk/log", swatch{colorPeer}})
	}
	return items
}

// savePlot draws p with the legend items in a strip under it (wrapped to
// as many lines as needed) and writes the PNG.
func savePlot(file string, p *plot.Plot, w, h vg.Length, items []legendItem) error {
	sty := text.Style{Color: colorBlack, Font: font.From(plot.DefaultFont, vg.Points(11)), Handler: plot.DefaultTextHandler}
	thumbW, gap, lineH := vg.Points(22), vg.Points(18), vg.Points(18)
	// Lay the entries out in lines.
	type placed struct {
		item legendItem
		x    vg.Length
		line int
	}
	var layout []placed
	x, line := vg.Length(0), 0
	left := vg.Points(10)
	for _, it := range items {
		iw := thumbW + vg.Points(5) + sty.Width(it.text)
		if x > 0 && left+x+iw > w-vg.Points(10) {
			x, line = 0, line+1
		}
		layout = append(layout, placed{it, x, line})
		x += iw + gap
	}
	legendH := vg.Length(0)
	if len(layout) > 0 {
		legendH = vg.Length(line+1)*lineH + vg.Points(10)
	}
	img := vgimg.NewWith(vgimg.UseWH(w, h+legendH), vgimg.UseDPI(chartDPI))
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, 0, legendH, 0))
	for _, pl := range layout {
		top := legendH - vg.Points(4) - vg.Length(pl.line)*lineH
		thumb := draw.Canvas{Canvas: dc.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: left + pl.x, Y: top - lineH + vg.Points(3)},
			Max: vg.Point{X: left + pl.x + thumbW, Y: top - vg.Points(3)},
		}}
		pl.item.thumb.Thumbnail(&thumb)
		ts := sty
		ts.YAlign = text.YCenter
		dc.FillText(ts, vg.Point{X: left + pl.x + thumbW + vg.Points(5), Y: top - lineH/2}, pl.item.text)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// kTicks labels a linear axis in thousands or millions: 40k, 1.2M.
type kTicks struct{}

func (kTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = humanCount(ts[i].Value)
		}
	}
	return ts
}

func humanCount(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return trimZero(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case a >= 1e3:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "k"
	}
	return trimZero(fmt.Sprintf("%.1f", v))
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// durationLogTicks marks a log axis of nanoseconds at every power of ten,
// labelled as durations (100ns, 1µs, 10ms, 1s), with minor ticks between.
type durationLogTicks struct{}

func (durationLogTicks) Ticks(lo, hi float64) []plot.Tick {
	return logTicks(lo, hi, func(v, m float64) string {
		if m == 1 {
			return durLabel(int64(v))
		}
		return ""
	})
}

// percentTicks are the default ticks of an axis of percentages, labelled
// 97.5%.
var percentTicks = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = trimZero(fmt.Sprintf("%.1f", ts[i].Value)) + "%"
		}
	}
	return ts
})

// logTicks marks a log axis from lo to hi at 1 to 9 times each power of
// ten, labelled by label(value, multiple); an empty label is a minor tick.
func logTicks(lo, hi float64, label func(v, m float64) string) []plot.Tick {
	if !(lo > 0) || !(hi > lo) || !finite(lo) || !finite(hi) {
		return nil
	}
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		base := math.Pow(10, e)
		for m := 1.0; m < 10; m++ {
			if v := m * base; v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: label(v, m)})
			}
		}
	}
	return ts
}

// deliveredChart: delivered per minute per design, with the target and,
// at the seed's rate, the seed's published figures.
func (r *Report) deliveredChart(file string, ds []DesignResult) (bool, error) {
	atSeedRate := r.Config.Rate == 2000 && r.Config.Mode == ModeFixed
	var rows []barRow
	for _, d := range ds {
		label := commas(int64(d.DeliveredPerMin + 0.5))
		if d.Target > 0 {
			label += fmt.Sprintf(" (%.0f%%)", d.DeliveredPctOfTarget)
		}
		rw := barRow{name: d.Name, value: d.DeliveredPerMin, label: label}
		if atSeedRate {
			rw.ref = seedPublished[d.Name]
		}
		rows = append(rows, rw)
	}
	var target float64
	if r.Config.Mode != ModeSaturate && r.Config.Rate > 0 {
		target = r.Config.Rate * 60
	}
	var extra []legendItem
	if atSeedRate {
		extra = append(extra, legendItem{"the seed's published figure", tickThumb{}})
	}
	title := fmt.Sprintf("Events delivered per minute (%g events/s offered)", r.Config.Rate)
	if r.Config.Mode == ModeSaturate {
		title = "Events delivered per minute (saturate: as fast as each design goes)"
	}
	return hbarChart(file, title, "events delivered per minute", rows, target,
		"target: "+commas(int64(target))+" / min", kTicks{}, extra)
}

// cpuChart: the design's CPU per million events, with the range over
// repeated runs.
func (r *Report) cpuChart(file string, ds []DesignResult) (bool, error) {
	if len(ds) > 0 && ds[0].CPUMethod == CPUCallgrind {
		return r.instructionChart(file, ds)
	}
	var rows []barRow
	isolated := false
	for _, d := range ds {
		label := fmt.Sprintf("%.2f s", d.CPUSecondsPerMillion)
		rw := barRow{name: d.Name, value: d.CPUSecondsPerMillion}
		if d.Runs > 1 && len(d.CPURunsPerMillion) > 1 {
			rw.lo, rw.hi = minMax(d.CPURunsPerMillion)
			label += fmt.Sprintf(" ±%.0f%%", d.CPUSpreadPct)
		}
		rw.label = label
		isolated = isolated || d.CPUSource == "isolated"
		rows = append(rows, rw)
	}
	title := "Design CPU per million events (from the CPU profile)"
	if isolated {
		title = "Design CPU per million events (child process, load generator subtracted)"
	}
	var extra []legendItem
	if len(rows) > 0 && rows[0].hi > rows[0].lo {
		extra = append(extra, legendItem{fmt.Sprintf("range of %d runs (bar: median)", ds[0].Runs), errThumb{}})
	}
	return hbarChart(file, title, "CPU seconds per million events", rows, 0, "", nil, extra)
}

// instructionChart is cpuChart for -cpu callgrind: instructions per event.
func (r *Report) instructionChart(file string, ds []DesignResult) (bool, error) {
	var rows []barRow
	for _, d := range ds {
		rw := barRow{name: d.Name, value: d.InstructionsPerEvent, label: commas(int64(math.Round(d.InstructionsPerEvent)))}
		if d.Runs > 1 && len(d.InstructionRunsPerEvent) > 1 {
			rw.lo, rw.hi = minMax(d.InstructionRunsPerEvent)
			rw.label += fmt.Sprintf(" ±%.1f%%", d.InstructionSpreadPct)
		}
		rows = append(rows, rw)
	}
	var extra []legendItem
	if len(rows) > 0 && rows[0].hi > rows[0].lo {
		extra = append(extra, legendItem{fmt.Sprintf("range of %d runs (bar: median)", ds[0].Runs), errThumb{}})
	}
	return hbarChart(file, "Design instructions per event (callgrind, load generator subtracted)", "instructions per event", rows, 0, "", nil, extra)
}

// errThumb is the legend thumbnail of an error bar.
type errThumb struct{}

func (errThumb) Thumbnail(c *draw.Canvas) {
	r := c.Rectangle
	y := (r.Min.Y + r.Max.Y) / 2
	ls := draw.LineStyle{Color: colorBlack, Width: vg.Points(1.2)}
	c.StrokeLine2(ls, r.Min.X+vg.Points(2), y, r.Max.X-vg.Points(2), y)
	c.StrokeLine2(ls, r.Min.X+vg.Points(2), r.Min.Y+vg.Points(3), r.Min.X+vg.Points(2), r.Max.Y-vg.Points(3))
	c.StrokeLine2(ls, r.Max.X-vg.Points(2), r.Min.Y+vg.Points(3), r.Max.X-vg.Points(2), r.Max.Y-vg.Points(3))
}

func minMax(v []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return lo, hi
}

// latencyChart: Add's p50, p99 and p99.9 per design on a log axis of
// durations, with the loader's added latency marked; the p99 is written
// beside each row. Latencies of 0 (nothing measured) are not drawn; with
// none left the chart is skipped.
func (r *Report) latencyChart(file string, ds []DesignResult) (bool, error) {
	n := len(ds)
	series := []struct {
		label string
		get   func(AddLatency) int64
		shape draw.GlyphDrawer
	}{
		{"p50", func(a AddLatency) int64 { return a.P50 }, draw.RingGlyph{}},
		{"p99", func(a AddLatency) int64 { return a.P99 }, draw.CircleGlyph{}},
		{"p99.9", func(a AddLatency) int64 { return a.P999 }, draw.TriangleGlyph{}},
	}
	p := newPlot("Add latency: how long the service's handler waits")
	p.X.Label.Text = "Add latency (log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = durationLogTicks{}
	lo, hi := math.Inf(1), math.Inf(-1)
	names := make([]string, n)
	var labels plotter.XYLabels
	var items []legendItem
	var refItem *legendItem
	// The reference line first, so that the points are drawn over it.
	if lat := r.Config.LoaderLatencyMs * 1e6; lat > 0 && r.Config.Mode == ModeFixed && r.Config.Sink == SinkHTTP {
		line, err := plotter.NewLine(plotter.XYs{{X: lat, Y: -0.5}, {X: lat, Y: float64(n) - 0.5}})
		if err != nil {
			return false, err
		}
		line.LineStyle.Color = colorRef
		line.LineStyle.Width = vg.Points(1.5)
		line.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		p.Add(line)
		lo, hi = math.Min(lo, lat), math.Max(hi, lat)
		refItem = &legendItem{"the loader's added latency (" + durLabel(int64(lat)) + ")", line}
	}
	drawn := 0
	for si, s := range series {
		for i, d := range ds {
			y := float64(n - 1 - i)
			v := float64(s.get(d.AddLatencyNs))
			if !(v > 0) || !finite(v) {
				continue
			}
			sc, err := plotter.NewScatter(plotter.XYs{{X: v, Y: y}})
			if err != nil {
				return false, err
			}
			sc.GlyphStyle.Shape = s.shape
			sc.GlyphStyle.Color = designColor(d.Name)
			sc.GlyphStyle.Radius = vg.Points(5)
			p.Add(sc)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
			drawn++
		}
		items = append(items, legendItem{s.label, glyphThumb{s.shape}})
		_ = si
	}
	if drawn == 0 {
		return false, nil
	}
	if refItem != nil {
		items = append(items, *refItem)
	}
	for i, d := range ds {
		names[n-1-i] = chartName(d.Name)
		right := float64(max(d.AddLatencyNs.P50, d.AddLatencyNs.P99, d.AddLatencyNs.P999))
		if right > 0 && d.AddLatencyNs.P99 > 0 {
			labels.XYs = append(labels.XYs, plotter.XY{X: right, Y: float64(n - 1 - i)})
			labels.Labels = append(labels.Labels, "p99 "+durLabel(d.AddLatencyNs.P99))
		}
	}
	if len(labels.XYs) > 0 {
		lbl, err := valueLabels(labels)
		if err != nil {
			return false, err
		}
		lbl.Offset.X = vg.Points(12)
		p.Add(lbl)
	}
	p.NominalY(names...)
	p.Y.Min, p.Y.Max = -0.6, float64(n)-0.4
	// Half a decade of room on the left, two on the right for the labels.
	p.X.Min, p.X.Max = lo/3, hi*60
	p.Add(xGrid())
	items = append(groupLegend(designNames(ds)), items...)
	return true, savePlot(file, p, chartWidth, vg.Length(n)*rowHeight+1.3*vg.Inch, items)
}

func designNames(ds []DesignResult) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Name
	}
	return out
}

// glyphThumb is a legend thumbnail of a glyph shape, in black.
type glyphThumb struct{ shape draw.GlyphDrawer }

func (g glyphThumb) Thumbnail(c *draw.Canvas) {
	r := c.Rectangle
	c.DrawGlyph(draw.GlyphStyle{Color: colorBlack, Radius: vg.Points(5), Shape: g.shape},
		vg.Point{X: (r.Min.X + r.Max.X) / 2, Y: (r.Min.Y + r.Max.Y) / 2})
}

// sweepChart draws the share of the target delivered against the loader's
// latency, one line per design, for one kind of load.
func (r *Report) sweepChart(file, load string) (bool, error) {
	byDesign := map[string]plotter.XYs{}
	var order []string
	for _, d := range r.Sweep {
		if d.Load != load || (d.Error != "" && d.Offered == 0) || !finite(d.DeliveredPctOfTarget) || !finite(d.LoaderLatencyMs) {
			continue
		}
		if _, ok := byDesign[d.Name]; !ok {
			order = append(order, d.Name)
		}
		byDesign[d.Name] = append(byDesign[d.Name], plotter.XY{X: d.LoaderLatencyMs, Y: d.DeliveredPctOfTarget})
	}
	if len(order) == 0 {
		return false, nil
	}
	p := newPlot(fmt.Sprintf("Delivered against the loader's latency (%s loop, %g events/s)", load, r.Config.Rate))
	p.X.Label.Text = "latency the loader adds per request (ms)"
	p.Y.Label.Text = "delivered, % of target"
	var items []legendItem
	lo, hi := 100.0, 100.0
	xhi := 0.0
	nOurs, nSeed := 0, 0
	for _, name := range order {
		xys := byDesign[name]
		sort.Slice(xys, func(i, j int) bool { return xys[i].X < xys[j].X })
		line, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return false, err
		}
		var c color.Color = colorPeer
		var shape draw.GlyphDrawer = draw.CircleGlyph{}
		switch {
		case isOurs(name):
			c = oursLines[nOurs%len(oursLines)]
			shape = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}}[nOurs%3]
			line.LineStyle.Width = vg.Points(2.2)
			nOurs++
		case isSeed(name):
			c = seedLines[nSeed%len(seedLines)]
			shape = []draw.GlyphDrawer{draw.RingGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{}}[nSeed%3]
			line.LineStyle.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
			line.LineStyle.Width = vg.Points(1.6)
			nSeed++
		default:
			line.LineStyle.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
			line.LineStyle.Width = vg.Points(1.6)
		}
		line.LineStyle.Color = c
		pts.GlyphStyle.Color = c
		pts.GlyphStyle.Shape = shape
		pts.GlyphStyle.Radius = vg.Points(3.5)
		p.Add(line, pts)
		items = append(items, legendItem{name, lineThumbs{line, pts}})
		for _, xy := range xys {
			lo, hi = math.Min(lo, xy.Y), math.Max(hi, xy.Y)
			xhi = math.Max(xhi, xy.X)
		}
	}
	if xhi <= 0 {
		xhi = 1
	}
	target, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 100}, {X: xhi, Y: 100}})
	if err != nil {
		return false, err
	}
	target.LineStyle.Color = colorRef
	target.LineStyle.Width = vg.Points(1.2)
	target.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	p.Add(target)
	items = append(items, legendItem{"target (100%)", target})
	g := plotter.NewGrid()
	g.Vertical.Color, g.Horizontal.Color = color.Gray{Y: 0xe0}, color.Gray{Y: 0xe0}
	p.Add(g)
	p.X.Min, p.X.Max = -xhi*0.02, xhi*1.02
	p.X.Tick.Marker = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
		var ts []plot.Tick
		for _, v := range []float64{0, 100, 250, 400, 500, 750, 1000, 1500, 2000} {
			if v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: fmt.Sprint(v)})
			}
		}
		return ts
	})
	p.Y.Tick.Marker = percentTicks
	p.Y.Min, p.Y.Max = math.Max(0, lo-10), hi+4
	return true, savePlot(file, p, chartWidth, 4.2*vg.Inch, items)
}

// lineThumbs draws several thumbnails in one legend entry.
type lineThumbs []plot.Thumbnailer

func (t lineThumbs) Thumbnail(c *draw.Canvas) {
	for _, th := range t {
		th.Thumbnail(c)
	}
}

// durLabel is dur without a trailing ".0": 10µs, 400ms, 1.5s.
func durLabel(ns int64) string {
	s := dur(ns)
	for _, u := range []string{"ms", "µs", "s"} {
		if strings.HasSuffix(s, ".0"+u) {
			return strings.TrimSuffix(s, ".0"+u) + u
		}
		if strings.HasSuffix(s, ".00"+u) {
			return strings.TrimSuffix(s, ".00"+u) + u
		}
	}
	return s
}
