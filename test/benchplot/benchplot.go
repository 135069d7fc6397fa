// Package benchplot draws the small PNG charts that the benchmark harness writes into docs/:
// empirical CDFs of failover time (log x), and CPU or API request rate against the number of
// members (lines with points, log x and optionally log y).
//
// It is deliberately small: one chart kind with linear or log axes, four series styles, a fixed
// palette of ten colours that series cycle through, and the 7x13 bitmap font from
// golang.org/x/image (ASCII only; other runes draw as a replacement box). It does not
// anti-alias, rotate tick labels or thin out long series.
//
// What it guarantees:
//   - Determinism: the same Chart always renders to the same bytes (no maps, no randomness, no
//     clock), so regenerated docs change only when the data changes.
//   - Bad input is an error that wraps ErrInvalidChart and says what to fix, never a panic or a
//     silently wrong picture: no series, a series without points or with len(X) != len(Y),
//     NaN or ±Inf, a non-positive value on a log axis, a size too small for labels and legend.
//   - The legend sits to the right of the plot area, so it never hides data.
//   - Tick marks sit at "nice" values: 1-2-5 steps on linear axes; on log axes 1..9, 1-2-5 or
//     whole decades (every n-th decade for very wide ranges), thinned until labels do not overlap.
package benchplot

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Style says how a series is drawn.
type Style int

const (
	// Line joins consecutive points with straight 2-px segments. It is the zero value.
	Line Style = iota
	// Step draws a staircase: from each point horizontally to the next point's x, then
	// vertically to its y. This is how an empirical CDF is drawn; see CDF.
	Step
	// LinePoints is Line with a filled disc on every point.
	LinePoints
	// Points draws filled discs only.
	Points
)

// String returns the style's name.
func (s Style) String() string {
	switch s {
	case Line:
		return "Line"
	case Step:
		return "Step"
	case LinePoints:
		return "LinePoints"
	case Points:
		return "Points"
	}
	return "Style(" + strconv.Itoa(int(s)) + ")"
}

// Series is one curve and one legend entry. X and Y have the same length, at least 1. Points are
// joined in the order given; sort them by X for line charts. A Line or Step series with a single
// point is drawn as a disc so that it stays visible.
type Series struct {
	Name  string // legend entry; names longer than 40 runes are shortened with "..."
	X, Y  []float64
	Style Style
}

// Chart describes one PNG chart. The zero values of Width and Height mean DefaultWidth and
// DefaultHeight. A Chart is only read by its methods, so one Chart may be rendered many times.
type Chart struct {
	Title, XLabel, YLabel string

	// LogX and LogY select a base-10 logarithmic axis. Every value on a log axis, including a
	// pinned YMin or YMax, must be positive.
	LogX, LogY bool

	// Width and Height are the image size in pixels, at least MinWidth x MinHeight and at most
	// MaxSize in each direction.
	Width, Height int

	// YMin and YMax pin the ends of the y axis (use Bound; a CDF wants Bound(0) and Bound(1)).
	// A nil end is chosen from the data with a small margin; on a linear axis an automatic lower
	// end never goes below zero when all data are non-negative. Data outside a pinned range are
	// clipped at the edge of the plot area.
	YMin, YMax *float64

	// Series are drawn in order, later ones on top, with colours from a fixed palette of ten
	// (series i gets colour i mod 10).
	Series []Series
}

// Size limits, in pixels.
const (
	DefaultWidth  = 900
	DefaultHeight = 540
	MinWidth      = 320
	MinHeight     = 200
	MaxSize       = 8192
)

// ErrInvalidChart is wrapped by every error that comes from the chart's content (series, values,
// size, pinned range) rather than from writing the file.
var ErrInvalidChart = errors.New("invalid chart")

// Bound returns a pointer to v, for Chart.YMin and Chart.YMax.
func Bound(v float64) *float64 { return &v }

// CDF returns the empirical cumulative distribution of samples as a Step series: the samples
// sorted ascending as X, and Y[k] = (k+1)/n, so Y runs from 1/n to exactly 1. The caller's slice
// is not modified. An empty samples slice gives a series with no points, which Render rejects.
func CDF(name string, samples []float64) Series {
	x := slices.Clone(samples)
	slices.Sort(x)
	y := make([]float64, len(x))
	for k := range y {
		y[k] = float64(k+1) / float64(len(x))
	}
	return Series{Name: name, X: x, Y: y, Style: Step}
}

// palette is matplotlib's "tab10": ten hues that stay apart on white and in most colour-vision
// deficiencies. None of them equals the ink, axis, grid or legend-border colours below, which the
// tests rely on to find a series by its colour.
var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // blue
	{0xff, 0x7f, 0x0e, 0xff}, // orange
	{0x2c, 0xa0, 0x2c, 0xff}, // green
	{0xd6, 0x27, 0x28, 0xff}, // red
	{0x94, 0x67, 0xbd, 0xff}, // purple
	{0x8c, 0x56, 0x4b, 0xff}, // brown
	{0xe3, 0x77, 0xc2, 0xff}, // pink
	{0x7f, 0x7f, 0x7f, 0xff}, // grey
	{0xbc, 0xbd, 0x22, 0xff}, // olive
	{0x17, 0xbe, 0xcf, 0xff}, // cyan
}

var (
	background   = color.RGBA{0xff, 0xff, 0xff, 0xff}
	inkColour    = color.RGBA{0x1a, 0x1a, 0x1a, 0xff}
	axisColour   = color.RGBA{0x40, 0x40, 0x40, 0xff}
	gridColour   = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	minorColour  = color.RGBA{0xf3, 0xf3, 0xf3, 0xff}
	borderColour = color.RGBA{0xb4, 0xb4, 0xb4, 0xff}
)

func seriesColour(i int) color.RGBA { return palette[i%len(palette)] }

// Layout constants in pixels. The font is fixed, so every text extent is known up front.
var face = basicfont.Face7x13

const (
	margin        = 10 // around the whole image
	fontHeight    = 13
	fontAscent    = 11
	tickLength    = 5
	tickGap       = 4 // between a tick mark and its label
	legendGap     = 24
	legendRow     = 18
	swatchLength  = 24
	markerRadius  = 3
	maxLegendName = 40
	maxTicks      = 10
	minPlotWidth  = 120
	minPlotHeight = 80
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidChart}, args...)...)
}

// validate checks everything that does not depend on layout and returns the image size.
func (c *Chart) validate() (width, height int, err error) {
	width, height = c.Width, c.Height
	if width == 0 {
		width = DefaultWidth
	}
	if height == 0 {
		height = DefaultHeight
	}
	if width < MinWidth || height < MinHeight || width > MaxSize || height > MaxSize {
		return 0, 0, invalid("size %dx%d is outside %dx%d..%dx%d: set Width and Height in that range (0 means %dx%d)",
			width, height, MinWidth, MinHeight, MaxSize, MaxSize, DefaultWidth, DefaultHeight)
	}
	if len(c.Series) == 0 {
		return 0, 0, invalid("no series: add at least one Series")
	}
	for i, s := range c.Series {
		label := fmt.Sprintf("series %d (%q)", i, s.Name)
		if s.Style < Line || s.Style > Points {
			return 0, 0, invalid("%s: unknown %v: use Line, Step, LinePoints or Points", label, s.Style)
		}
		if len(s.X) != len(s.Y) {
			return 0, 0, invalid("%s: len(X) = %d but len(Y) = %d: give one Y per X", label, len(s.X), len(s.Y))
		}
		if len(s.X) == 0 {
			return 0, 0, invalid("%s: no points: drop the series or give it at least one point", label)
		}
		for j := range s.X {
			if err := checkValue(label, "X", j, s.X[j], c.LogX); err != nil {
				return 0, 0, err
			}
			if err := checkValue(label, "Y", j, s.Y[j], c.LogY); err != nil {
				return 0, 0, err
			}
		}
	}
	for _, pin := range []struct {
		name string
		v    *float64
	}{{"YMin", c.YMin}, {"YMax", c.YMax}} {
		if pin.v == nil {
			continue
		}
		if math.IsNaN(*pin.v) || math.IsInf(*pin.v, 0) {
			return 0, 0, invalid("%s is %v: pin a finite value or leave it nil", pin.name, *pin.v)
		}
		if c.LogY && *pin.v <= 0 {
			return 0, 0, invalid("%s = %g on a log y axis: pin a positive value or leave it nil", pin.name, *pin.v)
		}
	}
	if c.YMin != nil && c.YMax != nil && *c.YMin >= *c.YMax {
		return 0, 0, invalid("YMin = %g is not below YMax = %g", *c.YMin, *c.YMax)
	}
	return width, height, nil
}

func checkValue(label, coord string, j int, v float64, log bool) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return invalid("%s: %s[%d] is %v: drop or replace non-finite values", label, coord, j, v)
	}
	if log && v <= 0 {
		return invalid("%s: %s[%d] = %g on a log %s axis: values must be positive (drop the point or use a linear axis)",
			label, coord, j, v, strings.ToLower(coord))
	}
	return nil
}

// axis maps data values to pixels: lo to p0 and hi to p1 (p1 < p0 for the y axis, whose pixels
// grow downwards).
type axis struct {
	lo, hi float64
	log    bool
	ticks  []float64
	p0, p1 float64
}

func (a *axis) pixel(v float64) float64 {
	var t float64
	if a.log {
		t = (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	} else {
		t = (v - a.lo) / (a.hi - a.lo)
	}
	return a.p0 + t*(a.p1-a.p0)
}

// newAxis chooses the axis range from the data range [lo, hi] and the optional pins. Unpinned
// ends get a 4% margin (in log space on a log axis) so that no point sits on the frame.
func newAxis(name string, lo, hi float64, log bool, pinLo, pinHi *float64) (*axis, error) {
	dataLo, degenerate := lo, lo == hi
	switch {
	case log && lo == hi:
		lo, hi = lo/2, hi*2
	case log:
		l0, l1 := math.Log10(lo), math.Log10(hi)
		pad := (l1 - l0) * 0.04
		lo, hi = math.Pow(10, l0-pad), math.Pow(10, l1+pad)
	case lo == hi:
		pad := math.Abs(lo) * 0.1
		if pad == 0 {
			pad = 1
		}
		lo, hi = lo-pad, hi+pad
	default:
		pad := (hi - lo) * 0.04
		lo, hi = lo-pad, hi+pad
	}
	if !log && !degenerate && dataLo >= 0 && lo < 0 {
		lo = 0 // a margin must not invent negative CPU or request rates
	}
	if pinLo != nil {
		lo = *pinLo
	}
	if pinHi != nil {
		hi = *pinHi
	}
	if math.IsInf(hi-lo, 0) || (log && (lo == 0 || math.IsInf(hi, 0))) {
		return nil, invalid("%s range [%g, %g] is too wide to draw", name, lo, hi)
	}
	if !(lo < hi) {
		return nil, invalid("%s range [%g, %g] is empty: the pinned end lies beyond all data", name, lo, hi)
	}
	return &axis{lo: lo, hi: hi, log: log}, nil
}

// fitTicks picks the densest nice ticks (at most maxTicks) whose labels do not collide, where
// fits reports whether two adjacent labels at the given pixels are far enough apart.
func (a *axis) fitTicks(fits func(v0, v1 float64, p0, p1 float64) bool) {
	for n := maxTicks; n >= 2; n-- {
		a.ticks = a.tickValues(n)
		ok := true
		for i := 1; i < len(a.ticks) && ok; i++ {
			ok = fits(a.ticks[i-1], a.ticks[i], a.pixel(a.ticks[i-1]), a.pixel(a.ticks[i]))
		}
		if ok {
			return
		}
	}
}

func (a *axis) tickValues(n int) []float64 {
	if a.log {
		return logTicks(a.lo, a.hi, n)
	}
	return linearTicks(a.lo, a.hi, n)
}

// decimal returns m·10^e computed so that it is the double nearest the decimal value (0.3, not
// 0.30000000000000004): dividing by an exact power of ten rounds once.
func decimal(m int64, e int) float64 {
	if e >= 0 {
		return float64(m) * math.Pow10(e)
	}
	return float64(m) / math.Pow10(-e)
}

// linearTicks returns the multiples of the smallest step m·10^e (m in 1, 2, 5) that puts at most
// n ticks in [lo, hi].
func linearTicks(lo, hi float64, n int) []float64 {
	e := int(math.Floor(math.Log10((hi-lo)/float64(n)))) - 1
	for range 40 {
		for _, m := range []int64{1, 2, 5} {
			step := decimal(m, e)
			first := math.Ceil(lo/step - 1e-9)
			last := math.Floor(hi/step + 1e-9)
			if math.Abs(first) > 1e15 || math.Abs(last) > 1e15 {
				return []float64{lo, hi} // the range is too narrow for its magnitude
			}
			if last-first+1 > float64(n) {
				continue
			}
			ticks := make([]float64, 0, n)
			for k := int64(first); k <= int64(last); k++ {
				ticks = append(ticks, decimal(k*m, e))
			}
			return ticks
		}
		e++
	}
	return []float64{lo, hi}
}

// logTicks returns at most n ticks in [lo, hi] at, from densest to sparsest: 1..9 per decade,
// 1-2-5 per decade, every decade, every k-th decade. Of the first three it takes the densest with
// at least two ticks. A range so narrow that this leaves fewer than four ticks (0.9 to 1.2) gets
// linear ticks instead when those are more.
func logTicks(lo, hi float64, n int) []float64 {
	for _, mantissas := range [][]int64{{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 5}, {1}} {
		if t := decadeTicks(lo, hi, mantissas, 1); len(t) >= 2 && len(t) <= n {
			if lin := linearTicks(lo, hi, n); len(t) < 4 && len(lin) > len(t) {
				return lin
			}
			return t
		}
	}
	e0, e1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	for stride := 2; stride <= int(e1-e0)+1; stride++ {
		if t := decadeTicks(lo, hi, []int64{1}, stride); len(t) <= n {
			if len(t) >= 2 {
				return t
			}
			break
		}
	}
	return linearTicks(lo, hi, n)
}

// minorTicks returns unlabelled ticks at 2..9 within each decade when the labelled ticks of a log
// axis are whole consecutive decades, so that values between labels can still be read.
func (a *axis) minorTicks() []float64 {
	if !a.log || len(a.ticks) < 2 || math.Abs(a.ticks[1]/a.ticks[0]-10) > 1e-6 {
		return nil
	}
	return decadeTicks(a.lo, a.hi, []int64{2, 3, 4, 5, 6, 7, 8, 9}, 1)
}

func decadeTicks(lo, hi float64, mantissas []int64, stride int) []float64 {
	var ticks []float64
	e0, e1 := int(math.Floor(math.Log10(lo))), int(math.Ceil(math.Log10(hi)))
	for e := e0; e <= e1; e++ {
		if ((e%stride)+stride)%stride != 0 {
			continue
		}
		for _, m := range mantissas {
			if v := decimal(m, e); v >= lo*(1-1e-9) && v <= hi*(1+1e-9) {
				ticks = append(ticks, v)
			}
		}
	}
	return ticks
}

// formatTick writes a tick value compactly: 50, 0.25, 1.5k, 20k, 3M.
func formatTick(v float64) string {
	short := func(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }
	switch a := math.Abs(v); {
	case a >= 1e12 || a == 0:
		return short(v)
	case a >= 1e9:
		return short(v/1e9) + "G"
	case a >= 1e6:
		return short(v/1e6) + "M"
	case a >= 1e3:
		return short(v/1e3) + "k"
	}
	return short(v)
}

func textWidth(s string) int { return font.MeasureString(face, s).Ceil() }

func legendName(s string) string {
	if r := []rune(s); len(r) > maxLegendName {
		return string(r[:maxLegendName-3]) + "..."
	}
	return s
}

// layout is where everything goes; the tests use it to find the plot area and the legend.
type layout struct {
	plot   image.Rectangle // the plot frame, inclusive of its edge pixels: Max is one past
	legend image.Rectangle
	x, y   *axis
}

func (l *layout) toPixel(x, y float64) (float64, float64) { return l.x.pixel(x), l.y.pixel(y) }

func (c *Chart) layout(width, height int) (*layout, error) {
	xlo, xhi := math.Inf(1), math.Inf(-1)
	ylo, yhi := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for j := range s.X {
			xlo, xhi = min(xlo, s.X[j]), max(xhi, s.X[j])
			ylo, yhi = min(ylo, s.Y[j]), max(yhi, s.Y[j])
		}
	}
	xa, err := newAxis("x", xlo, xhi, c.LogX, nil, nil)
	if err != nil {
		return nil, err
	}
	ya, err := newAxis("y", ylo, yhi, c.LogY, c.YMin, c.YMax)
	if err != nil {
		return nil, err
	}

	// Vertical: title, half a y tick label above the frame, the plot, x tick labels, x label.
	top := margin + fontHeight/2
	if c.Title != "" {
		top += fontHeight + 8
	}
	bottom := height - margin - fontHeight - tickGap - tickLength
	if c.XLabel != "" {
		bottom -= fontHeight + 6
	}
	ya.p0, ya.p1 = float64(bottom), float64(top)
	ya.fitTicks(func(_, _, p0, p1 float64) bool { return math.Abs(p1-p0) >= fontHeight+4 })

	// Horizontal: rotated y label, y tick labels, the plot, the legend.
	left := margin
	if c.YLabel != "" {
		left += fontHeight + 6
	}
	labelWidth := 0
	for _, t := range ya.ticks {
		labelWidth = max(labelWidth, textWidth(formatTick(t)))
	}
	left += labelWidth + tickGap + tickLength
	nameWidth := 0
	for _, s := range c.Series {
		nameWidth = max(nameWidth, textWidth(legendName(s.Name)))
	}
	legendWidth := 8 + swatchLength + 8 + nameWidth + 8
	legendLeft := width - margin - legendWidth
	right := legendLeft - legendGap
	if right-left < minPlotWidth || bottom-top < minPlotHeight {
		return nil, invalid("size %dx%d leaves a plot area of %dx%d px after labels and legend, below %dx%d: raise Width/Height or shorten series names",
			width, height, max(right-left, 0), max(bottom-top, 0), minPlotWidth, minPlotHeight)
	}
	xa.p0, xa.p1 = float64(left), float64(right)
	xa.fitTicks(func(v0, v1, p0, p1 float64) bool {
		need := float64(textWidth(formatTick(v0))+textWidth(formatTick(v1)))/2 + 10
		return math.Abs(p1-p0) >= need
	})
	return &layout{
		plot:   image.Rect(left, top, right+1, bottom+1),
		legend: image.Rect(legendLeft, top, width-margin, top+6+legendRow*len(c.Series)+4),
		x:      xa,
		y:      ya,
	}, nil
}

// Render draws the chart. The image is an *image.RGBA.
func (c *Chart) Render() (image.Image, error) {
	img, _, err := c.render()
	if err != nil {
		return nil, err
	}
	return img, nil
}

func (c *Chart) render() (*image.RGBA, *layout, error) {
	width, height, err := c.validate()
	if err != nil {
		return nil, nil, err
	}
	l, err := c.layout(width, height)
	if err != nil {
		return nil, nil, err
	}
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(background), image.Point{}, draw.Src)
	p := l.plot
	x0, y0, x1, y1 := p.Min.X, p.Min.Y, p.Max.X-1, p.Max.Y-1

	// Grid first, then the frame and data on top of it, then labels outside the frame.
	for _, t := range l.x.minorTicks() {
		px := int(math.Round(l.x.pixel(t)))
		fillRect(img, image.Rect(px, y0, px+1, y1+1), minorColour)
		fillRect(img, image.Rect(px, y1+1, px+1, y1+1+tickLength/2+1), axisColour)
	}
	for _, t := range l.y.minorTicks() {
		py := int(math.Round(l.y.pixel(t)))
		fillRect(img, image.Rect(x0, py, x1+1, py+1), minorColour)
		fillRect(img, image.Rect(x0-tickLength/2-1, py, x0, py+1), axisColour)
	}
	for _, t := range l.x.ticks {
		px := int(math.Round(l.x.pixel(t)))
		fillRect(img, image.Rect(px, y0, px+1, y1+1), gridColour)
	}
	for _, t := range l.y.ticks {
		py := int(math.Round(l.y.pixel(t)))
		fillRect(img, image.Rect(x0, py, x1+1, py+1), gridColour)
	}
	strokeRect(img, p, axisColour)

	// Lines may run one pixel past the frame so that a curve along an edge (a CDF at y = 1)
	// stays fully visible; discs are drawn only for points inside the pinned range.
	clip := [4]float64{float64(x0 - 1), float64(y0 - 1), float64(x1 + 1), float64(y1 + 1)}
	for i, s := range c.Series {
		col := seriesColour(i)
		px, py := make([]float64, len(s.X)), make([]float64, len(s.X))
		for j := range s.X {
			px[j], py[j] = l.toPixel(s.X[j], s.Y[j])
		}
		for j := 1; j < len(px); j++ {
			switch s.Style {
			case Line, LinePoints:
				drawSegment(img, px[j-1], py[j-1], px[j], py[j], clip, col)
			case Step:
				drawSegment(img, px[j-1], py[j-1], px[j], py[j-1], clip, col)
				drawSegment(img, px[j], py[j-1], px[j], py[j], clip, col)
			}
		}
		if s.Style == LinePoints || s.Style == Points || len(px) == 1 {
			for j := range px {
				if px[j] >= float64(x0)-0.5 && px[j] <= float64(x1)+0.5 && py[j] >= float64(y0)-0.5 && py[j] <= float64(y1)+0.5 {
					fillDisc(img, int(math.Round(px[j])), int(math.Round(py[j])), markerRadius, col)
				}
			}
		}
	}

	for _, t := range l.x.ticks {
		px := int(math.Round(l.x.pixel(t)))
		fillRect(img, image.Rect(px, y1+1, px+1, y1+1+tickLength), axisColour)
		label := formatTick(t)
		drawText(img, label, px-textWidth(label)/2, y1+1+tickLength+tickGap+fontAscent, inkColour)
	}
	for _, t := range l.y.ticks {
		py := int(math.Round(l.y.pixel(t)))
		fillRect(img, image.Rect(x0-tickLength, py, x0, py+1), axisColour)
		label := formatTick(t)
		drawText(img, label, x0-tickLength-tickGap-textWidth(label), py+fontAscent/2-1, inkColour)
	}
	if c.Title != "" {
		drawText(img, c.Title, (width-textWidth(c.Title))/2, margin+fontAscent, inkColour)
	}
	if c.XLabel != "" {
		drawText(img, c.XLabel, (x0+x1-textWidth(c.XLabel))/2, height-margin-2, inkColour)
	}
	if c.YLabel != "" {
		drawTextUp(img, c.YLabel, margin, (y0+y1)/2, inkColour)
	}

	lg := l.legend
	fillRect(img, lg, background)
	strokeRect(img, lg, borderColour)
	for i, s := range c.Series {
		col := seriesColour(i)
		cy := lg.Min.Y + 6 + i*legendRow + legendRow/2
		sx0, sx1 := lg.Min.X+8, lg.Min.X+8+swatchLength
		if s.Style != Points {
			fillRect(img, image.Rect(sx0, cy-1, sx1, cy+1), col)
		}
		if s.Style == Points || s.Style == LinePoints {
			fillDisc(img, (sx0+sx1)/2, cy, markerRadius, col)
		}
		drawText(img, legendName(s.Name), sx1+8, cy+fontAscent/2-1, inkColour)
	}
	return img, l, nil
}

// PNG renders the chart and encodes it as PNG.
func (c *Chart) PNG() ([]byte, error) {
	img, err := c.Render()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode png: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteFile renders the chart and writes it to path as PNG with mode 0644. It writes a temporary
// file in the same directory and renames it over path, so a reader never sees half a chart and a
// failed render leaves the old file in place.
func (c *Chart) WriteFile(path string) (err error) {
	data, err := c.PNG()
	if err != nil {
		return fmt.Errorf("render %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func fillRect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// strokeRect draws a 1-px outline on the edge pixels of r.
func strokeRect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	fillRect(img, image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+1), c)
	fillRect(img, image.Rect(r.Min.X, r.Max.Y-1, r.Max.X, r.Max.Y), c)
	fillRect(img, image.Rect(r.Min.X, r.Min.Y, r.Min.X+1, r.Max.Y), c)
	fillRect(img, image.Rect(r.Max.X-1, r.Min.Y, r.Max.X, r.Max.Y), c)
}

func fillDisc(img *image.RGBA, cx, cy, r int, c color.RGBA) {
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			if dx*dx+dy*dy <= r*r+r/2 {
				img.SetRGBA(cx+dx, cy+dy, c)
			}
		}
	}
}

// drawSegment clips the segment to clip (minX, minY, maxX, maxY) with Liang–Barsky, so that a
// point far outside a pinned range costs nothing, then rasterises it with Bresenham, stamping a
// 2x2 block per step for a 2-px line.
func drawSegment(img *image.RGBA, ax, ay, bx, by float64, clip [4]float64, c color.RGBA) {
	t0, t1 := 0.0, 1.0
	dx, dy := bx-ax, by-ay
	for _, e := range [4][2]float64{{-dx, ax - clip[0]}, {dx, clip[2] - ax}, {-dy, ay - clip[1]}, {dy, clip[3] - ay}} {
		p, q := e[0], e[1]
		if p == 0 {
			if q < 0 {
				return
			}
			continue
		}
		t := q / p
		if p < 0 {
			if t > t1 {
				return
			}
			t0 = max(t0, t)
		} else {
			if t < t0 {
				return
			}
			t1 = min(t1, t)
		}
	}
	x, y := int(math.Round(ax+t0*dx)), int(math.Round(ay+t0*dy))
	xEnd, yEnd := int(math.Round(ax+t1*dx)), int(math.Round(ay+t1*dy))
	sx, sy := 1, 1
	if xEnd < x {
		sx = -1
	}
	if yEnd < y {
		sy = -1
	}
	ddx, ddy := abs(xEnd-x), -abs(yEnd-y)
	errTerm := ddx + ddy
	for {
		img.SetRGBA(x, y, c)
		img.SetRGBA(x+1, y, c)
		img.SetRGBA(x, y+1, c)
		img.SetRGBA(x+1, y+1, c)
		if x == xEnd && y == yEnd {
			return
		}
		e2 := 2 * errTerm
		if e2 >= ddy {
			errTerm += ddy
			x += sx
		}
		if e2 <= ddx {
			errTerm += ddx
			y += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func drawText(img *image.RGBA, s string, x, baseline int, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, baseline)}
	d.DrawString(s)
}

// drawTextUp draws s rotated a quarter turn anticlockwise (reading upwards), its glyph tops
// facing left at column left, centred on row centreY.
func drawTextUp(img *image.RGBA, s string, left, centreY int, c color.RGBA) {
	w := textWidth(s)
	mask := image.NewAlpha(image.Rect(0, 0, w, fontHeight))
	d := font.Drawer{Dst: mask, Src: image.Opaque, Face: face, Dot: fixed.P(0, fontAscent)}
	d.DrawString(s)
	top := centreY - w/2
	for ty := range fontHeight {
		for tx := range w {
			if mask.AlphaAt(tx, ty).A >= 0x80 {
				img.SetRGBA(left+ty, top+w-1-tx, c)
			}
		}
	}
}
