package bench

import (
	"fmt"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// charts writes the report's PNG charts into dir.
func (r *Report) charts(dir string) error {
	if len(r.Designs) > 0 {
		names := make([]string, len(r.Designs))
		perMin := make(plotter.Values, len(r.Designs))
		cpu := make(plotter.Values, len(r.Designs))
		for i, d := range r.Designs {
			names[i] = d.Name
			perMin[i] = d.DeliveredPerMin
			cpu[i] = d.CPUSecondsPerMillion
		}
		if err := barChart(filepath.Join(dir, "delivered_per_min.png"), "Events delivered per minute", "events / min", names, perMin); err != nil {
			return err
		}
		if err := barChart(filepath.Join(dir, "cpu_per_million.png"), "Design CPU per million events", "CPU seconds", names, cpu); err != nil {
			return err
		}
		if err := r.latencyChart(filepath.Join(dir, "add_latency.png"), names); err != nil {
			return err
		}
	}
	if len(r.Sweep) > 0 {
		for _, load := range []string{LoadClosed, LoadOpen} {
			if err := r.sweepChart(filepath.Join(dir, "sweep_"+load+".png"), load); err != nil {
				return err
			}
		}
	}
	return nil
}

func barChart(file, title, ylabel string, names []string, v plotter.Values) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	bars, err := plotter.NewBarChart(v, vg.Points(22))
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars, plotter.NewGrid())
	p.NominalX(names...)
	p.Y.Min = 0
	p.Y.Max *= 1.05
	return p.Save(vg.Points(float64(125*max(len(names), 4)+80)), 4*vg.Inch, file)
}

// latencyChart shows Add p50 / p99 / p99.9 per design on a log scale (µs),
// as points (a bar has no base on a log scale).
func (r *Report) latencyChart(file string, names []string) error {
	p := plot.New()
	p.Title.Text = "Add latency (µs, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	series := []struct {
		label string
		get   func(AddLatency) int64
	}{
		{"p50", func(a AddLatency) int64 { return a.P50 }},
		{"p99", func(a AddLatency) int64 { return a.P99 }},
		{"p99.9", func(a AddLatency) int64 { return a.P999 }},
	}
	for i, s := range series {
		xys := make(plotter.XYs, len(r.Designs))
		for j, d := range r.Designs {
			xys[j] = plotter.XY{X: float64(j) + 0.15*float64(i-1), Y: max(float64(s.get(d.AddLatencyNs))/1e3, 0.01)}
		}
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Color = plotutil.Color(i)
		sc.GlyphStyle.Shape = plotutil.Shape(i)
		sc.GlyphStyle.Radius = vg.Points(4)
		p.Add(sc)
		p.Legend.Add(s.label, sc)
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.5, float64(len(names))-0.5
	return p.Save(vg.Points(float64(125*max(len(names), 4)+80)), 4*vg.Inch, file)
}

// sweepChart draws delivered per minute against the loader latency, one
// line per design, for one kind of load.
func (r *Report) sweepChart(file, load string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Delivered per minute vs loader latency (%s loop)", load)
	p.X.Label.Text = "loader added latency (ms)"
	p.Y.Label.Text = "events / min"
	byDesign := map[string]plotter.XYs{}
	var order []string
	for _, d := range r.Sweep {
		if d.Load != load {
			continue
		}
		if _, ok := byDesign[d.Name]; !ok {
			order = append(order, d.Name)
		}
		byDesign[d.Name] = append(byDesign[d.Name], plotter.XY{X: d.LoaderLatencyMs, Y: d.DeliveredPerMin})
	}
	if len(order) == 0 {
		return nil
	}
	var args []any
	for _, n := range order {
		xys := byDesign[n]
		sort.Slice(xys, func(i, j int) bool { return xys[i].X < xys[j].X })
		args = append(args, n, xys)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	p.Add(plotter.NewGrid())
	p.Y.Min = 0
	p.Y.Max *= 1.15 // room for the legend above the lines
	p.Legend.Top = true
	p.Legend.Left = true
	return p.Save(8*vg.Inch, 5*vg.Inch, file)
}
