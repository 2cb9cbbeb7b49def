package main

import (
	"fmt"
	"io"

	"github.com/walhook/walhook/replication"
)

// printTLS says how check's connection to PostgreSQL is protected, and
// warns when one that leaves the machine is not encrypted or does not
// verify the server.
func printTLS(out io.Writer, r replication.TLSReport) {
	const fix = "use sslmode=verify-full with sslrootcert=<the CA's certificate> in source.url"
	switch {
	case !r.Encrypted:
		fmt.Fprintln(out, "tls: off")
		if !r.Local {
			fmt.Fprintf(out, "  warning: the connection to PostgreSQL is not encrypted; turn ssl on in PostgreSQL and %s\n", fix)
		}
	case r.HostChecked:
		fmt.Fprintf(out, "tls: %s (%s); server certificate and host name verified (ok)\n", r.Version, r.Cipher)
	case r.Verified:
		fmt.Fprintf(out, "tls: %s (%s); server certificate verified, host name not checked (sslmode=verify-ca)\n", r.Version, r.Cipher)
	default:
		fmt.Fprintf(out, "tls: %s (%s); server certificate not verified (sslmode=require or prefer)\n", r.Version, r.Cipher)
		if !r.Local {
			fmt.Fprintf(out, "  warning: anyone on the network path could pose as PostgreSQL; %s\n", fix)
		}
	}
}

// printPrivileges prints the role and each privilege it lacks with the
// statement that grants it, and returns the problems for the summary.
func printPrivileges(out io.Writer, p replication.Privileges) []string {
	switch {
	case p.Superuser:
		fmt.Fprintf(out, "role %s: superuser (ok; LOGIN REPLICATION and SELECT on the captured tables are enough, see the README's Deployment section)\n", p.Role)
	case p.Replication:
		fmt.Fprintf(out, "role %s: REPLICATION (ok)\n", p.Role)
	default:
		fmt.Fprintf(out, "role %s: no REPLICATION\n", p.Role)
	}
	var problems []string
	for _, m := range p.Missing {
		fmt.Fprintf(out, "error: role %s lacks %s: %s\n  fix: %s\n", p.Role, m.What, m.Why, m.Fix)
		problems = append(problems, fmt.Sprintf("role %s lacks %s", p.Role, m.What))
	}
	return problems
}
