package benchplot

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// failoverSamples returns n log-normal failover times around median ms, from a fixed seed so
// that every run draws the same chart.
func failoverSamples(seed uint64, n int, median, sigma float64) []float64 {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]float64, n)
	for i := range out {
		out[i] = median * math.Exp(sigma*r.NormFloat64())
	}
	return out
}

func cdfChart() *Chart {
	return &Chart{
		Title:  "Leader failover time after killing the leader pod",
		XLabel: "time to new leader (ms, log scale)",
		YLabel: "fraction of failovers",
		LogX:   true,
		YMin:   Bound(0),
		YMax:   Bound(1),
		Series: []Series{
			CDF("raft-elector 3 default", failoverSamples(1, 200, 450, 0.35)),
			CDF("raft-elector 5 default", failoverSamples(2, 200, 520, 0.4)),
			CDF("client-go Lease 3 defaults", failoverSamples(3, 200, 9000, 0.3)),
		},
	}
}

func cpuChart() *Chart {
	members := []float64{3, 5, 9, 25, 55, 105}
	return &Chart{
		Title:  "CPU per pod against cluster size",
		XLabel: "members (log scale)",
		YLabel: "CPU, % of one core",
		LogX:   true,
		YMin:   Bound(0),
		Series: []Series{
			{Name: "raft-elector leader", X: members, Y: []float64{0.8, 1.2, 2.1, 5.5, 11.8, 22.4}, Style: LinePoints},
			{Name: "raft-elector follower", X: members, Y: []float64{0.3, 0.3, 0.35, 0.4, 0.45, 0.5}, Style: LinePoints},
			{Name: "client-go leader", X: members, Y: []float64{0.6, 0.6, 0.7, 0.7, 0.8, 0.8}, Style: LinePoints},
			{Name: "client-go follower", X: members, Y: []float64{1.5, 1.6, 1.6, 1.7, 1.8, 1.9}, Style: LinePoints},
		},
	}
}

func apiChart() *Chart {
	members := []float64{3, 5, 9, 25, 55, 105}
	return &Chart{
		Title:  "Kubernetes API requests against cluster size",
		XLabel: "members",
		YLabel: "requests/s (log scale)",
		LogX:   true,
		LogY:   true,
		Series: []Series{
			{Name: "raft-elector", X: members, Y: []float64{0.02, 0.02, 0.02, 0.02, 0.02, 0.02}, Style: LinePoints},
			{Name: "client-go Lease", X: members, Y: []float64{1.5, 2.5, 4.5, 12.5, 27.5, 52.5}, Style: LinePoints},
		},
	}
}

func decode(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode png: %v", err)
	}
	return img
}

func sameColour(c color.Color, want color.RGBA) bool {
	r, g, b, a := c.RGBA()
	wr, wg, wb, wa := want.RGBA()
	return r == wr && g == wg && b == wb && a == wa
}

func countColour(img image.Image, r image.Rectangle, want color.RGBA) int {
	n := 0
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if sameColour(img.At(x, y), want) {
				n++
			}
		}
	}
	return n
}

func TestPNGHasRequestedSize(t *testing.T) {
	for _, tc := range []struct {
		name          string
		chart         *Chart
		width, height int
	}{
		{"cdf default size", cdfChart(), DefaultWidth, DefaultHeight},
		{"lines default size", cpuChart(), DefaultWidth, DefaultHeight},
		{"log-log default size", apiChart(), DefaultWidth, DefaultHeight},
		{"cdf custom size", func() *Chart { c := cdfChart(); c.Width, c.Height = 1200, 700; return c }(), 1200, 700},
		{"lines minimum size", func() *Chart { c := apiChart(); c.Width, c.Height = MinWidth+200, MinHeight; return c }(), MinWidth + 200, MinHeight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.chart.PNG()
			if err != nil {
				t.Fatal(err)
			}
			if got := decode(t, b).Bounds(); got != image.Rect(0, 0, tc.width, tc.height) {
				t.Fatalf("bounds = %v, want %dx%d", got, tc.width, tc.height)
			}
		})
	}
}

// Every series must show up in its own colour both inside the plot frame and in the legend, and
// nowhere else (the legend sits beside the plot, so no series pixel may land under it either).
func TestEverySeriesColourInPlotAndLegend(t *testing.T) {
	for name, c := range map[string]*Chart{"cdf": cdfChart(), "cpu": cpuChart(), "api": apiChart()} {
		t.Run(name, func(t *testing.T) {
			img, l, err := c.render()
			if err != nil {
				t.Fatal(err)
			}
			if l.legend.Overlaps(l.plot) {
				t.Fatalf("legend %v overlaps plot area %v", l.legend, l.plot)
			}
			// Lines may run 1 px past the frame and discs of points on it markerRadius px.
			allowed := l.plot.Inset(-(markerRadius + 1))
			for i, s := range c.Series {
				col := seriesColour(i)
				if n := countColour(img, l.plot, col); n < 20 {
					t.Errorf("series %q: %d pixels of %v inside the plot area, want at least 20", s.Name, n, col)
				}
				if n := countColour(img, l.legend, col); n < 10 {
					t.Errorf("series %q: %d pixels of %v in the legend, want at least 10", s.Name, n, col)
				}
				total := countColour(img, img.Bounds(), col)
				inside := countColour(img, allowed, col) + countColour(img, l.legend, col)
				if total != inside {
					t.Errorf("series %q: %d pixels of %v outside plot area and legend", s.Name, total-inside, col)
				}
			}
		})
	}
}

func TestPaletteIsDistinctFromChrome(t *testing.T) {
	for i, p := range palette {
		for _, chrome := range []color.RGBA{background, inkColour, axisColour, gridColour, minorColour, borderColour} {
			if p == chrome {
				t.Errorf("palette[%d] = %v is also a chrome colour", i, p)
			}
		}
		if slices.Index(palette, p) != i {
			t.Errorf("palette[%d] = %v repeats an earlier colour", i, p)
		}
	}
	if len(palette) < 8 {
		t.Errorf("palette has %d colours, want at least 8", len(palette))
	}
	if seriesColour(len(palette)+2) != palette[2] {
		t.Error("series colours do not cycle through the palette")
	}
}

func TestMappingPutsDataAtExpectedPixels(t *testing.T) {
	c := &Chart{
		LogX: true, YMin: Bound(0), YMax: Bound(1),
		Series: []Series{{Name: "probe", X: []float64{50, 20000}, Y: []float64{0.5, 0.5}, Style: Points}},
	}
	_, l, err := c.render()
	if err != nil {
		t.Fatal(err)
	}
	left, right := float64(l.plot.Min.X), float64(l.plot.Max.X-1)
	top, bottom := float64(l.plot.Min.Y), float64(l.plot.Max.Y-1)
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6 {
			t.Errorf("%s: pixel %.4f, want %.4f", what, got, want)
		}
	}
	_, py := l.toPixel(50, 0)
	near("y = 0 (pinned YMin)", py, bottom)
	_, py = l.toPixel(50, 1)
	near("y = 1 (pinned YMax)", py, top)
	_, py = l.toPixel(50, 0.25)
	near("y = 0.25", py, bottom-(bottom-top)/4)
	px, _ := l.toPixel(l.x.lo, 0)
	near("x at axis low end", px, left)
	px, _ = l.toPixel(l.x.hi, 0)
	near("x at axis high end", px, right)
	px, _ = l.toPixel(math.Sqrt(l.x.lo*l.x.hi), 0)
	near("x at geometric mean of a log axis", px, (left+right)/2)
	p10, _ := l.toPixel(100, 0)
	p100, _ := l.toPixel(1000, 0)
	p1000, _ := l.toPixel(10000, 0)
	near("decades are equally wide", p100-p10, p1000-p100)
	if l.x.lo >= 50 || l.x.hi <= 20000 {
		t.Errorf("x axis [%g, %g] does not leave a margin around the data [50, 20000]", l.x.lo, l.x.hi)
	}
}

// The disc of a single point must be centred on the pixel the mapping predicts.
func TestPointIsDrawnAtMappedPixel(t *testing.T) {
	for _, tc := range []struct {
		name string
		x, y float64
		logX bool
	}{
		{"log x", 300, 0.25, true},
		{"linear x", 7, 0.8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Chart{
				LogX: tc.logX, YMin: Bound(0), YMax: Bound(1),
				Series: []Series{
					{Name: "frame", X: []float64{1, 1000}, Y: []float64{0, 1}, Style: Line},
					{Name: "probe", X: []float64{tc.x}, Y: []float64{tc.y}, Style: Points},
				},
			}
			img, l, err := c.render()
			if err != nil {
				t.Fatal(err)
			}
			wantX, wantY := l.toPixel(tc.x, tc.y)
			probe := seriesColour(1)
			var sx, sy, n float64
			for y := l.plot.Min.Y; y < l.plot.Max.Y; y++ {
				for x := l.plot.Min.X; x < l.plot.Max.X; x++ {
					if sameColour(img.At(x, y), probe) {
						sx, sy, n = sx+float64(x), sy+float64(y), n+1
					}
				}
			}
			if n == 0 {
				t.Fatalf("no pixel of the probe colour in the plot area; expected a disc at (%.1f, %.1f)", wantX, wantY)
			}
			if gx, gy := sx/n, sy/n; math.Abs(gx-wantX) > 0.75 || math.Abs(gy-wantY) > 0.75 {
				t.Errorf("probe disc centred at (%.2f, %.2f), want (%.2f, %.2f)", gx, gy, wantX, wantY)
			}
			far := image.Pt(int(math.Round(wantX))+markerRadius+3, int(math.Round(wantY)))
			if sameColour(img.At(far.X, far.Y), probe) {
				t.Errorf("pixel %v, outside the disc, has the probe colour", far)
			}
		})
	}
}

func TestLinearTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []float64
	}{
		{0, 1, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{0, 12, []float64{0, 2, 4, 6, 8, 10, 12}},
		{0, 23.3, []float64{0, 5, 10, 15, 20}},
		{-0.48, 12.48, []float64{0, 2, 4, 6, 8, 10, 12}},
		{-3.2, 3.2, []float64{-3, -2, -1, 0, 1, 2, 3}},
		{0.3, 0.7, []float64{0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7}},
		{1000, 10000, []float64{1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000}},
		{0.9, 1.2, []float64{0.9, 0.95, 1, 1.05, 1.1, 1.15, 1.2}},
	} {
		if got := linearTicks(tc.lo, tc.hi, maxTicks); !slices.Equal(got, tc.want) {
			t.Errorf("linearTicks(%g, %g) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// Over many ranges, linear ticks use one 1-2-5 step, stay inside the range and number 4 to 10.
func TestLinearTicksAreNice(t *testing.T) {
	for _, lo := range []float64{-1234, -1, 0, 0.001, 3, 97.5, 1e6} {
		for _, span := range []float64{1e-3, 0.37, 1, 2.5, 9.99, 10, 73, 1e4, 3.3e7} {
			hi := lo + span
			ticks := linearTicks(lo, hi, maxTicks)
			if len(ticks) < 4 || len(ticks) > maxTicks {
				t.Errorf("[%g, %g]: %d ticks %v, want 4..%d", lo, hi, len(ticks), ticks, maxTicks)
				continue
			}
			step := ticks[1] - ticks[0]
			e := math.Floor(math.Log10(step))
			m := step / math.Pow(10, e)
			if !slices.ContainsFunc([]float64{1, 2, 5}, func(n float64) bool { return math.Abs(m-n) < 1e-6 }) {
				t.Errorf("[%g, %g]: step %g is not 1, 2 or 5 times a power of ten", lo, hi, step)
			}
			for i, v := range ticks {
				if v < lo-1e-6*span || v > hi+1e-6*span {
					t.Errorf("[%g, %g]: tick %g outside the range", lo, hi, v)
				}
				if i > 0 && math.Abs(v-ticks[i-1]-step) > 1e-6*step {
					t.Errorf("[%g, %g]: uneven ticks %v", lo, hi, ticks)
					break
				}
			}
		}
	}
}

func TestLogTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []float64
	}{
		{42, 23700, []float64{50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000}},
		{2.5, 125, []float64{5, 10, 20, 50, 100}},
		{1.9, 10.5, []float64{2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{0.01, 1, []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}},
		{1, 1e6, []float64{1, 10, 100, 1000, 1e4, 1e5, 1e6}},
		{1, 1e12, []float64{1, 100, 1e4, 1e6, 1e8, 1e10, 1e12}},
		{0.9, 1.2, []float64{0.9, 0.95, 1, 1.05, 1.1, 1.15, 1.2}},
	} {
		if got := logTicks(tc.lo, tc.hi, maxTicks); !slices.Equal(got, tc.want) {
			t.Errorf("logTicks(%g, %g) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}

func TestFormatTick(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {0.3, "0.3"}, {0.05, "0.05"}, {50, "50"}, {500, "500"}, {1000, "1k"},
		{1500, "1.5k"}, {20000, "20k"}, {250000, "250k"}, {2e6, "2M"}, {3e9, "3G"}, {-2000, "-2k"},
		{0.1 + 0.2, "0.3"},
	} {
		if got := formatTick(tc.v); got != tc.want {
			t.Errorf("formatTick(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// On the rendered axes no two adjacent x tick labels may touch.
func TestTickLabelsDoNotOverlap(t *testing.T) {
	for _, width := range []int{MinWidth + 200, 600, DefaultWidth} {
		for name, c := range map[string]*Chart{"cdf": cdfChart(), "cpu": cpuChart(), "api": apiChart()} {
			c.Width = width
			_, l, err := c.render()
			if err != nil {
				t.Fatalf("%s at width %d: %v", name, width, err)
			}
			if len(l.x.ticks) < 2 || len(l.y.ticks) < 2 {
				t.Errorf("%s at width %d: ticks x %v y %v, want at least two on each axis", name, width, l.x.ticks, l.y.ticks)
			}
			for i := 1; i < len(l.x.ticks); i++ {
				a, b := l.x.ticks[i-1], l.x.ticks[i]
				gap := l.x.pixel(b) - l.x.pixel(a) - float64(textWidth(formatTick(a))+textWidth(formatTick(b)))/2
				if gap < 4 {
					t.Errorf("%s at width %d: labels %s and %s only %.1f px apart", name, width, formatTick(a), formatTick(b), gap)
				}
			}
		}
	}
}

func TestInvalidChartsAreErrors(t *testing.T) {
	good := func() Series { return Series{Name: "s", X: []float64{1, 2}, Y: []float64{1, 2}} }
	with := func(edit func(c *Chart)) *Chart {
		c := &Chart{Series: []Series{good()}}
		edit(c)
		return c
	}
	long := strings.Repeat("x", 60)
	for _, tc := range []struct {
		name  string
		chart *Chart
		want  string
	}{
		{"no series", &Chart{}, "no series"},
		{"mismatched lengths", with(func(c *Chart) { c.Series[0].Y = []float64{1} }), "len(X) = 2 but len(Y) = 1"},
		{"zero points", with(func(c *Chart) { c.Series[0].X, c.Series[0].Y = nil, nil }), "no points"},
		{"empty CDF", with(func(c *Chart) { c.Series = append(c.Series, CDF("none", nil)) }), `series 1 ("none"): no points`},
		{"NaN x", with(func(c *Chart) { c.Series[0].X[1] = math.NaN() }), "X[1] is NaN"},
		{"Inf y", with(func(c *Chart) { c.Series[0].Y[0] = math.Inf(-1) }), "Y[0] is -Inf"},
		{"zero on log x", with(func(c *Chart) { c.LogX = true; c.Series[0].X[0] = 0 }), "X[0] = 0 on a log x axis"},
		{"negative on log y", with(func(c *Chart) { c.LogY = true; c.Series[0].Y[1] = -3 }), "Y[1] = -3 on a log y axis"},
		{"unknown style", with(func(c *Chart) { c.Series[0].Style = 9 }), "unknown Style(9)"},
		{"too narrow", with(func(c *Chart) { c.Width = MinWidth - 1 }), "size 319x540"},
		{"too low", with(func(c *Chart) { c.Height = 50 }), "size 900x50"},
		{"negative size", with(func(c *Chart) { c.Width = -900 }), "size -900x540"},
		{"too large", with(func(c *Chart) { c.Width = MaxSize + 1 }), "size 8193x540"},
		{"no room for legend", with(func(c *Chart) { c.Width = MinWidth; c.Series[0].Name = long }), "leaves a plot area"},
		{"YMin not below YMax", with(func(c *Chart) { c.YMin, c.YMax = Bound(1), Bound(1) }), "YMin = 1 is not below YMax = 1"},
		{"NaN YMax", with(func(c *Chart) { c.YMax = Bound(math.NaN()) }), "YMax is NaN"},
		{"zero YMin on log y", with(func(c *Chart) { c.LogY = true; c.YMin = Bound(0) }), "YMin = 0 on a log y axis"},
		{"YMin above all data", with(func(c *Chart) { c.YMin = Bound(5) }), "y range [5, 2.04] is empty"},
		{"range too wide", with(func(c *Chart) { c.Series[0].X = []float64{-math.MaxFloat64, math.MaxFloat64} }), "too wide"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := tc.chart.Render()
			if err == nil {
				t.Fatalf("Render succeeded (image %v), want an error containing %q", img.Bounds(), tc.want)
			}
			if !errors.Is(err, ErrInvalidChart) {
				t.Errorf("error %q does not wrap ErrInvalidChart", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if _, err := tc.chart.PNG(); err == nil {
				t.Error("PNG succeeded where Render failed")
			}
		})
	}
}

// A degenerate range is padded, not rejected: one member count, one CPU value, or a single point.
func TestDegenerateRangesArePadded(t *testing.T) {
	for _, tc := range []struct {
		name       string
		logX, logY bool
		x, y       []float64
	}{
		{"all X equal, linear", false, false, []float64{5, 5, 5}, []float64{1, 2, 3}},
		{"all X equal, log", true, false, []float64{9, 9}, []float64{1, 2}},
		{"single point at zero", false, false, []float64{0}, []float64{0}},
		{"single point, log-log", true, true, []float64{25}, []float64{0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Chart{LogX: tc.logX, LogY: tc.logY, Series: []Series{{Name: "s", X: tc.x, Y: tc.y, Style: Line}}}
			img, l, err := c.render()
			if err != nil {
				t.Fatal(err)
			}
			px, py := l.toPixel(tc.x[0], tc.y[0])
			if math.Abs(px-float64(l.plot.Min.X+l.plot.Max.X-1)/2) > 1 {
				t.Errorf("x = %g at pixel %.1f, want the middle of the plot %v", tc.x[0], px, l.plot)
			}
			if !image.Pt(int(math.Round(px)), int(math.Round(py))).In(l.plot) {
				t.Errorf("point (%g, %g) maps to (%.1f, %.1f) outside the plot %v", tc.x[0], tc.y[0], px, py, l.plot)
			}
			if countColour(img, l.plot, seriesColour(0)) == 0 {
				t.Error("series not drawn")
			}
		})
	}
}

func TestSameChartGivesSameBytes(t *testing.T) {
	for name, mk := range map[string]func() *Chart{"cdf": cdfChart, "cpu": cpuChart, "api": apiChart} {
		a, err := mk().PNG()
		if err != nil {
			t.Fatal(err)
		}
		c := mk()
		b, err := c.PNG()
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.PNG()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) || !bytes.Equal(b, again) {
			t.Errorf("%s: rendering the same chart gave different bytes", name)
		}
	}
}

func TestCDF(t *testing.T) {
	samples := []float64{300, 100, 200, 200, 50}
	orig := slices.Clone(samples)
	s := CDF("x", samples)
	if !slices.Equal(samples, orig) {
		t.Errorf("CDF modified its input: %v", samples)
	}
	if s.Name != "x" || s.Style != Step {
		t.Errorf("CDF gave name %q style %v, want \"x\" Step", s.Name, s.Style)
	}
	if want := []float64{50, 100, 200, 200, 300}; !slices.Equal(s.X, want) {
		t.Errorf("X = %v, want %v", s.X, want)
	}
	if want := []float64{0.2, 0.4, 0.6, 0.8, 1}; !slices.Equal(s.Y, want) {
		t.Errorf("Y = %v, want %v", s.Y, want)
	}

	big := CDF("big", failoverSamples(9, 999, 500, 1))
	if !slices.IsSorted(big.X) {
		t.Error("X not sorted")
	}
	if big.Y[0] != 1.0/999 || big.Y[len(big.Y)-1] != 1 {
		t.Errorf("Y runs from %v to %v, want 1/999 to exactly 1", big.Y[0], big.Y[len(big.Y)-1])
	}
	for k := 1; k < len(big.Y); k++ {
		if big.Y[k] <= big.Y[k-1] {
			t.Fatalf("Y not strictly increasing at %d: %v then %v", k, big.Y[k-1], big.Y[k])
		}
	}
	if e := CDF("empty", nil); len(e.X) != 0 || len(e.Y) != 0 {
		t.Errorf("CDF of no samples = %v", e)
	}
}

// WriteFile writes the example charts into a temporary directory. Set BENCHPLOT_SAMPLE_DIR to
// also keep them there for a look, e.g. BENCHPLOT_SAMPLE_DIR=/tmp go test ./test/benchplot.
func TestWriteFile(t *testing.T) {
	dirs := []string{t.TempDir()}
	if d := os.Getenv("BENCHPLOT_SAMPLE_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, dir := range dirs {
		for name, c := range map[string]*Chart{"cdf": cdfChart(), "lines": cpuChart(), "api": apiChart()} {
			path := filepath.Join(dir, "benchplot-sample-"+name+".png")
			if err := c.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := decode(t, b).Bounds(); got != image.Rect(0, 0, DefaultWidth, DefaultHeight) {
				t.Errorf("%s: bounds %v", path, got)
			}
			want, err := c.PNG()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("%s differs from PNG()", path)
			}
		}
	}

	dir := dirs[0]
	path := filepath.Join(dir, "benchplot-sample-cdf.png")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Chart{}).WriteFile(path); !errors.Is(err, ErrInvalidChart) {
		t.Errorf("WriteFile of an empty chart: %v, want ErrInvalidChart", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a failed WriteFile changed the existing file")
	}
	if err := cdfChart().WriteFile(filepath.Join(dir, "missing", "x.png")); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
