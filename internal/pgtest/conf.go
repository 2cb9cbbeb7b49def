package pgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// settings returns the configuration lines opts ask for, the port and the
// socket directory aside.
func (opts Options) settings() ([]string, error) {
	level := opts.WALLevel
	if level == "" {
		level = "logical"
	}
	senders := "40"
	switch level {
	case "logical", "replica":
	case "minimal":
		senders = "0"
	default:
		return nil, fmt.Errorf("wal level %q: want minimal, replica or logical", opts.WALLevel)
	}
	if opts.WALSenderTimeout < 0 {
		return nil, fmt.Errorf("wal sender timeout %v: want a positive duration, or zero for the default", opts.WALSenderTimeout)
	}
	conf := []string{
		"wal_level = " + level,
		"max_replication_slots = 40",
		"max_wal_senders = " + senders,
		"listen_addresses = '127.0.0.1'",
		"fsync = off",
		"synchronous_commit = on",
		"full_page_writes = off",
		"shared_buffers = 32MB",
		"max_connections = 200",
		"logging_collector = off",
	}
	for _, u := range opts.CertUsers {
		if !certUserRe.MatchString(u) {
			return nil, fmt.Errorf("cert user %q: want a lower-case SQL identifier (letters, digits, _)", u)
		}
	}
	if len(opts.CertUsers) > 0 && !opts.TLS {
		return nil, fmt.Errorf("cert users %q need TLS: set Options.TLS", opts.CertUsers)
	}
	if opts.TLS {
		conf = append(conf,
			"ssl = on",
			"ssl_cert_file = "+quoteConf(serverCertFile),
			"ssl_key_file = "+quoteConf(serverKeyFile),
			"ssl_ca_file = "+quoteConf(serverCAFile))
	}
	if opts.WALSenderTimeout > 0 {
		ms := max(opts.WALSenderTimeout.Milliseconds(), 1)
		conf = append(conf, "wal_sender_timeout = '"+strconv.FormatInt(ms, 10)+"ms'")
	}
	return append(conf, opts.ExtraConf...), nil
}

// hbaConf trusts every connection over the Unix socket and from 127.0.0.1,
// replication connections included ("all" does not cover those).
const hbaConf = `# Written by walhook's internal/pgtest: trust everything local.
local   all           all                 trust
host    all           all   127.0.0.1/32  trust
local   replication   all                 trust
host    replication   all   127.0.0.1/32  trust
`

// hba returns pg_hba.conf: hbaConf, after lines that let certUsers in over
// TCP only with TLS and a client certificate (the first line that matches
// decides).
func hba(certUsers []string) string {
	var b strings.Builder
	for _, u := range certUsers {
		fmt.Fprintf(&b, "hostssl   all           %s   127.0.0.1/32  cert\n", u)
		fmt.Fprintf(&b, "hostssl   replication   %s   127.0.0.1/32  cert\n", u)
		fmt.Fprintf(&b, "hostnossl all           %s   127.0.0.1/32  reject\n", u)
		fmt.Fprintf(&b, "hostnossl replication   %s   127.0.0.1/32  reject\n", u)
	}
	if b.Len() == 0 {
		return hbaConf
	}
	return "# Written by walhook's internal/pgtest: client certificates for some roles.\n" + b.String() + hbaConf
}

// configure replaces pg_hba.conf and makes postgresql.conf include the
// package's settings file, so that later settings override initdb's.
func (s *Server) configure(certUsers []string) error {
	if err := s.writeFile("pg_hba.conf", hba(certUsers)); err != nil {
		return err
	}
	path := filepath.Join(s.dataDir, "postgresql.conf")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("configure cluster: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by walhook's internal/pgtest.\ninclude = '%s'\n", confFile)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("configure cluster: %w", err)
	}
	return nil
}

// writeConf writes the settings file for a server on port.
func (s *Server) writeConf(port int, conf []string) error {
	var b strings.Builder
	b.WriteString("# Written by walhook's internal/pgtest.\n")
	fmt.Fprintf(&b, "port = %d\n", port)
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", quoteConf(s.dir))
	for _, line := range conf {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return s.writeFile(confFile, b.String())
}

// writeFile writes a file of the data directory, owned by the cluster's owner.
func (s *Server) writeFile(name, content string) error {
	path := filepath.Join(s.dataDir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("configure cluster: %w", err)
	}
	return s.owner.chown(path)
}

// quoteConf quotes a string for postgresql.conf.
func quoteConf(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
