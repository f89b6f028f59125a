// nova-dashboard-check FILE...: each Grafana dashboard is decoded strictly with Grafana's own
// schema types (grafana-foundation-sdk, Apache-2.0), panels and queries included through the
// SDK's plugin variants, then validated: an unknown field, a wrong type or a missing required
// field fails, naming the file and the field. Grafana itself (AGPL) is not run.
package main

import (
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nova-dashboard-check FILE...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, f := range os.Args[1:] {
		raw, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			failed = true
			continue
		}
		var d dashboard.Dashboard
		if err := failure(d.UnmarshalJSONStrict(raw)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: does not decode as a Grafana dashboard: %v\n", f, err)
			failed = true
			continue
		}
		if err := failure(d.Validate()); err != nil {
			fmt.Fprintf(os.Stderr, "%s: invalid: %v\n", f, err)
			failed = true
			continue
		}
		fmt.Printf("%s: ok (%d panels)\n", f, len(d.Panels))
	}
	if failed {
		os.Exit(1)
	}
}

// failure turns the SDK's empty error list (a typed nil inside a non-nil error) into nil.
func failure(err error) error {
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		return nil
	}
	return err
}
