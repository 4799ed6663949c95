package bench

import (
	"fmt"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// -mode limits' charts.
const (
	chartLimitsEvents = "limits_events_per_sec.png"
	chartLimitsRatio  = "limits_adaptive_vs_best_fixed.png"
)

// limitsTarget is issue 10's target: the adaptive limit delivers at least
// this share of the best fixed limit's events/s at every latency.
const limitsTarget = 0.9

// fixedLines are the fixed limits' colours, from the smallest limit (light)
// to the largest (dark), so the order reads at a glance.
var fixedLines = []color.Color{
	color.RGBA{R: 0xf4, G: 0xa5, B: 0x82, A: 0xff},
	color.RGBA{R: 0xe0, G: 0x9a, B: 0x2b, A: 0xff},
	color.RGBA{R: 0x9e, G: 0x9e, B: 0x9e, A: 0xff},
	color.RGBA{R: 0x61, G: 0x61, B: 0x61, A: 0xff},
	color.RGBA{R: 0x21, G: 0x21, B: 0x21, A: 0xff},
}

// limitsCharts draws -mode limits' charts: events/s against the loader's
// latency per design (log scale: 0 ms and 1 s differ fiftyfold), and
// batchproc's share of the best fixed limit at each latency.
func (r *Report) limitsCharts(try func(file, title string, draw func(string) (bool, error))) {
	if r.Config.Mode != ModeLimits || len(r.Sweep) == 0 {
		return
	}
	try(chartLimitsEvents, "Events per second against the loader's latency, adaptive and fixed send limits", r.limitsEventsChart)
	try(chartLimitsRatio, "The adaptive send limit as a share of the best fixed one", r.limitsRatioChart)
}

func (r *Report) limitsEventsChart(file string) (bool, error) {
	lats, names, cell := r.limitsGrid()
	title := "Events/s against the loader's latency (saturate"
	if k := r.Config.LoaderKnee; k > 0 {
		title += fmt.Sprintf(", knee at %d", k)
	}
	if l := r.Config.LoaderLimit; l > 0 {
		title += fmt.Sprintf(", 429 past %d", l)
	}
	p := newPlot(title + ")")
	p.X.Label.Text = "latency the loader adds per request (ms)"
	p.Y.Label.Text = "events delivered per second (log scale)"
	p.Y.Scale = plot.LogScale{}
	var items []legendItem
	lo, hi := math.Inf(1), 0.0
	nFixed := 0
	drawn := 0
	for _, name := range names {
		var xys plotter.XYs
		for _, l := range lats {
			d, ok := cell[name][l]
			if !ok || (d.Error != "" && d.Offered == 0) || !(d.DeliveredPerSec > 0) || !finite(d.DeliveredPerSec) {
				continue
			}
			xys = append(xys, plotter.XY{X: l, Y: d.DeliveredPerSec})
			lo, hi = math.Min(lo, d.DeliveredPerSec), math.Max(hi, d.DeliveredPerSec)
		}
		if len(xys) == 0 {
			continue
		}
		line, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return false, err
		}
		var c color.Color = colorOurs
		label := name
		pts.GlyphStyle.Shape = draw.CircleGlyph{}
		switch {
		case name == Batchproc:
			label = "batchproc (adaptive, default)"
			line.LineStyle.Width = vg.Points(2.6)
		case strings.HasPrefix(name, "batchproc-fixed-"):
			c = fixedLines[nFixed%len(fixedLines)]
			label = "fixed " + strings.TrimPrefix(name, "batchproc-fixed-")
			line.LineStyle.Width = vg.Points(1.4)
			line.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			pts.GlyphStyle.Shape = []draw.GlyphDrawer{draw.RingGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}}[nFixed%5]
			nFixed++
		default:
			c = colorPeer
			line.LineStyle.Width = vg.Points(1.4)
		}
		line.LineStyle.Color, pts.GlyphStyle.Color = c, c
		pts.GlyphStyle.Radius = vg.Points(3.2)
		p.Add(line, pts)
		items = append(items, legendItem{label, lineThumbs{line, pts}})
		drawn++
	}
	if drawn == 0 {
		return false, nil
	}
	g := plotter.NewGrid()
	g.Vertical.Color, g.Horizontal.Color = color.Gray{Y: 0xe0}, color.Gray{Y: 0xe0}
	p.Add(g)
	xhi := math.Max(lats[len(lats)-1], 1)
	p.X.Min, p.X.Max = -xhi*0.02, xhi*1.02
	p.X.Tick.Marker = latencyTicks(lats)
	p.Y.Min, p.Y.Max = lo/1.3, hi*1.3
	p.Y.Tick.Marker = countLogTicks{}
	return true, savePlot(file, p, chartWidth, 4.4*vg.Inch, items)
}

func (r *Report) limitsRatioChart(file string) (bool, error) {
	lats, _, _ := r.limitsGrid()
	ratios := r.LimitsRatios()
	var xys plotter.XYs
	var labels []string
	lo := 100 * limitsTarget
	for _, l := range lats {
		if x, ok := ratios[l]; ok && finite(x.Ratio) {
			xys = append(xys, plotter.XY{X: l, Y: 100 * x.Ratio})
			labels = append(labels, fmt.Sprintf("%.1f%% of %s", 100*x.Ratio, strings.TrimPrefix(x.BestFixed, "batchproc-")))
			lo = math.Min(lo, 100*x.Ratio)
		}
	}
	if len(xys) == 0 {
		return false, nil
	}
	p := newPlot("The adaptive limit's events/s as a share of the best fixed limit's")
	p.X.Label.Text = "latency the loader adds per request (ms)"
	p.Y.Label.Text = "batchproc / best fixed"
	line, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return false, err
	}
	line.LineStyle.Color, pts.GlyphStyle.Color = colorOurs, colorOurs
	line.LineStyle.Width = vg.Points(2.6)
	pts.GlyphStyle.Shape, pts.GlyphStyle.Radius = draw.CircleGlyph{}, vg.Points(3.5)
	xhi := math.Max(lats[len(lats)-1], 1)
	target, err := plotter.NewLine(plotter.XYs{{X: -xhi, Y: 100 * limitsTarget}, {X: 2 * xhi, Y: 100 * limitsTarget}})
	if err != nil {
		return false, err
	}
	target.LineStyle.Color = colorRef
	target.LineStyle.Width = vg.Points(1.2)
	target.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return false, err
	}
	for i := range lbl.TextStyle {
		lbl.TextStyle[i].Font.Size = vg.Points(9.5)
	}
	lbl.Offset = vg.Point{X: vg.Points(-20), Y: vg.Points(7)}
	g := plotter.NewGrid()
	g.Vertical.Color, g.Horizontal.Color = color.Gray{Y: 0xe0}, color.Gray{Y: 0xe0}
	p.Add(g, target, line, pts, lbl)
	p.X.Min, p.X.Max = -xhi*0.05, xhi*1.08
	p.X.Tick.Marker = latencyTicks(lats)
	p.Y.Min, p.Y.Max = math.Max(0, lo-8), 108
	p.Y.Tick.Marker = percentTicks
	items := []legendItem{{"batchproc (adaptive) / best fixed limit", lineThumbs{line, pts}},
		{fmt.Sprintf("target (%.0f%%)", 100*limitsTarget), target}}
	return true, savePlot(file, p, chartWidth, 3.6*vg.Inch, items)
}

// latencyTicks marks the latencies visited.
func latencyTicks(lats []float64) plot.Ticker {
	return plot.TickerFunc(func(lo, hi float64) []plot.Tick {
		var ts []plot.Tick
		for _, v := range lats {
			if v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: fmt.Sprint(v)})
			}
		}
		return ts
	})
}

// countLogTicks marks a log axis of counts at 1, 2 and 5 times each power
// of ten, labelled 10k, 200k, 1M.
type countLogTicks struct{}

func (countLogTicks) Ticks(lo, hi float64) []plot.Tick {
	return logTicks(lo, hi, func(v, m float64) string {
		if m == 1 || m == 2 || m == 5 {
			return humanCount(v)
		}
		return ""
	})
}
