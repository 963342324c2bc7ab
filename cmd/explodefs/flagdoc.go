package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
)

// flagTable renders a command's flags as the README's Markdown table:
// flag, environment variables in order of precedence, default, meaning.
// The README's tables are checked against it, so they cannot drift from
// the code.
func flagTable(fs *pflag.FlagSet) string {
	var b strings.Builder
	b.WriteString("| flag | env | default | meaning |\n|---|---|---|---|\n")
	fs.VisitAll(func(f *pflag.Flag) {
		usage, _, _ := strings.Cut(f.Usage, " [$") // bindEnv's suffix
		def := "`" + f.DefValue + "`"
		if f.DefValue == "" || f.DefValue == "[]" {
			def = ""
		}
		fmt.Fprintf(&b, "| `--%s` | `$%s` | %s | %s |\n", f.Name, strings.Join(envNames(f), "`, `$"), def,
			strings.ReplaceAll(usage, "|", `\|`))
	})
	return b.String()
}
