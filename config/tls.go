package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TLS is how a sink's client speaks TLS to an https:// receiver or a
// broker. The zero value trusts the system's CAs and sends no client
// certificate.
type TLS struct {
	// CAFile is a PEM file of the CA certificates to trust instead of the
	// system's; "" for the system's.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate (with any
	// intermediates after it) and its private key, for mutual TLS; both or
	// neither.
	CertFile string
	KeyFile  string
	// InsecureSkipVerify accepts any certificate the receiver shows.
	InsecureSkipVerify bool
}

// tls returns a sink's tls settings. Files are resolved against the
// configuration file's directory and must exist and parse now, so a
// mistake shows at its line rather than at the first delivery.
func (d *decoder) tls(v value, sinkURL string) TLS {
	o := d.object(v, "ca_file", "cert_file", "key_file", "insecure_skip_verify")
	caField, certField, keyField, skipField := o.field("ca_file"), o.field("cert_file"), o.field("key_file"), o.field("insecure_skip_verify")
	t := TLS{
		CAFile:             d.filePath(caField),
		CertFile:           d.filePath(certField),
		KeyFile:            d.filePath(keyField),
		InsecureSkipVerify: d.bool(skipField, false),
	}
	if !v.present() {
		return t
	}
	d.check(v, !strings.HasPrefix(strings.ToLower(sinkURL), "http://"),
		"set, but the url is http://, which never uses TLS; use an https:// url or remove tls")
	d.check(skipField, !t.InsecureSkipVerify || t.CAFile == "",
		"true turns off the check ca_file is for; keep ca_file and remove insecure_skip_verify")
	if t.CAFile != "" {
		d.caFile(caField, t.CAFile)
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		d.fail(certField, "needs key_file, the client certificate's private key; set both, or neither")
	case t.KeyFile != "" && t.CertFile == "":
		d.fail(keyField, "needs cert_file, the client certificate; set both, or neither")
	case t.CertFile != "":
		d.keyPair(certField, keyField, t.CertFile, t.KeyFile)
	}
	return t
}

// filePath returns a file path resolved against the configuration file's
// directory, or "" when v is absent. An empty path is a problem.
func (d *decoder) filePath(v value) string {
	s, ok := d.text(v)
	if !ok {
		return ""
	}
	if s == "" {
		d.fail(v, "empty; write the path of a PEM file, or remove the key")
		return ""
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(filepath.Dir(d.file), s)
	}
	return s
}

// readPEM reads a file for tls, recording a problem when it cannot.
func (d *decoder) readPEM(v value, path string) ([]byte, bool) {
	return d.readFile(v, path, "a PEM file")
}

// readFile reads a file a key names, recording a problem when it cannot;
// what says what the file should hold.
func (d *decoder) readFile(v value, path, what string) ([]byte, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		var perr *fs.PathError
		if errors.As(err, &perr) {
			err = perr.Err
		}
		d.fail(v, "cannot read %s: %v; write the path of %s (relative paths start at the configuration file's directory)", path, err, what)
		return nil, false
	}
	return data, true
}

// caFile checks that path holds PEM certificates, each of which parses.
func (d *decoder) caFile(v value, path string) {
	data, ok := d.readPEM(v, path)
	if !ok {
		return
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			d.fail(v, "certificate %d in %s does not parse: %v; write PEM CA certificates", n, path, err)
			return
		}
	}
	d.check(v, n > 0, "%s holds no PEM certificate (-----BEGIN CERTIFICATE-----); write the CA certificates that sign the receiver's", path)
}

// keyPair checks that a client certificate and its key load and match.
func (d *decoder) keyPair(certField, keyField value, certPath, keyPath string) {
	certPEM, okCert := d.readPEM(certField, certPath)
	keyPEM, okKey := d.readPEM(keyField, keyPath)
	if !okCert || !okKey {
		return
	}
	if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
		d.fail(certField, "%s does not start with a PEM certificate (-----BEGIN CERTIFICATE-----); write the client certificate", certPath)
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		// crypto/tls names what is wrong without quoting the key.
		d.fail(keyField, "%s and cert_file do not make a client certificate: %v; write the unencrypted PEM private key of cert_file", keyPath, strings.TrimPrefix(err.Error(), "tls: "))
	}
}

// ClientConfig builds a client's TLS settings from a sink's tls settings,
// reading the files now: nil when the sink has none, so the client keeps
// Go's defaults (the system's CAs). Every type of sink that speaks TLS
// uses it.
func (t TLS) ClientConfig() (*tls.Config, error) {
	if t == (TLS{}) {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("tls: cert_file and key_file go together; set both, or neither")
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file and key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
