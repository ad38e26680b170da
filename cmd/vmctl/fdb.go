package main

import (
	"time"
)

// fdb lists the learned MAC addresses.
func fdb(e *env, args []string) error {
	fs := e.flags("fdb")
	network := fs.String("network", "", "only the network `NET`")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	entries, err := e.client().FDB(e.ctx, *network)
	if err != nil {
		return apiError(err)
	}
	if *asJSON {
		return e.printJSON(nonNil(entries))
	}
	rows := make([][]string, 0, len(entries))
	for _, f := range entries {
		age := time.Duration(f.AgeSeconds * float64(time.Second)).Round(time.Second)
		vtep := f.VTEP
		if vtep == "" {
			vtep = "-"
		}
		rows = append(rows, []string{f.Network, f.MAC, f.Port, vtep, age.String()})
	}
	return e.table([]string{"NETWORK", "MAC", "PORT", "VTEP", "AGE"}, rows)
}
