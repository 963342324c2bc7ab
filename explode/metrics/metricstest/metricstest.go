// Package metricstest reads a /metrics endpoint for tests, with
// Prometheus's own text parser, into one value per series.
package metricstest

import (
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape reads url (a /metrics endpoint) and returns every series by its
// name and sorted labels, as in `name{a=x,b=y}`; histograms give
// name_count and name_sum. A failed request or unparsable text fails t.
func Scrape(t testing.TB, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s\n%s", url, resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s does not parse: %v", url, err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var kv []string
			for _, l := range m.GetLabel() {
				kv = append(kv, l.GetName()+"="+l.GetValue())
			}
			labels := ""
			if len(kv) > 0 {
				sort.Strings(kv)
				labels = "{" + strings.Join(kv, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[name+labels] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[name+labels] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[name+"_count"+labels] = float64(m.Histogram.GetSampleCount())
				out[name+"_sum"+labels] = m.Histogram.GetSampleSum()
			}
		}
	}
	return out
}
