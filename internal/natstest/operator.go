package natstest

import (
	"crypto/sha512"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

// Operator is an operator-mode (decentralized JWT) set-up for a server:
// an operator, a system account, one account with JetStream, and a user of the account
// whose credentials file is CredsFile, as nsc writes one (the user's JWT
// and its nkey seed). The JWTs are made here with nkeys, not with
// nats-io/jwt, which walhook does not otherwise need: they carry the
// claims nats-server checks (issuer chain, signatures, limits).
type Operator struct {
	// Config is the server configuration that trusts the operator and
	// knows the account (a memory resolver): Options.Config.
	Config string
	// CredsFile is the user's credentials file.
	CredsFile string
}

// NewOperator makes an operator set-up in t's temporary directory.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	op, opPub := newKeys(t, nkeys.CreateOperator)
	acct, acctPub := newKeys(t, nkeys.CreateAccount)
	opJWT := encodeJWT(t, op, opPub, "walhook-test", map[string]any{"type": "operator", "version": 2})
	acctJWT := encodeJWT(t, op, acctPub, "walhook", map[string]any{
		"type": "account", "version": 2,
		"limits": map[string]any{
			"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
			"conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
		},
	})
	// JetStream needs a system account.
	_, sysPub := newKeys(t, nkeys.CreateAccount)
	sysJWT := encodeJWT(t, op, sysPub, "SYS", map[string]any{"type": "account", "version": 2})
	return &Operator{
		Config: fmt.Sprintf("operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
			opJWT, sysPub, sysPub, sysJWT, acctPub, acctJWT),
		CredsFile: userCreds(t, acct, "walhook"),
	}
}

// StrangerCreds is a credentials file of a user of an account the
// operator never signed: a server of the set-up refuses it.
func (o *Operator) StrangerCreds(t testing.TB) string {
	t.Helper()
	acct, _ := newKeys(t, nkeys.CreateAccount)
	return userCreds(t, acct, "stranger")
}

// userCreds makes a user of the account acct and writes its credentials
// file.
func userCreds(t testing.TB, acct nkeys.KeyPair, name string) string {
	t.Helper()
	user, userPub := newKeys(t, nkeys.CreateUser)
	userJWT := encodeJWT(t, acct, userPub, name, map[string]any{
		"type": "user", "version": 2, "pub": map[string]any{}, "sub": map[string]any{}, "subs": -1, "data": -1, "payload": -1,
	})
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds := fmt.Sprintf("-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"+
		"************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n"+
		"-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n", userJWT, seed)
	path := filepath.Join(t.TempDir(), name+".creds")
	if err := os.WriteFile(path, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newKeys(t testing.TB, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

// encodeJWT is a NATS JWT of subject with the claims nats, signed by
// issuer: base64url header and claims and the issuer's ed25519 signature
// of both; jti is the hash of the claims without it, as nats-io/jwt makes
// it.
func encodeJWT(t testing.TB, issuer nkeys.KeyPair, subject, name string, nats map[string]any) string {
	t.Helper()
	iss, err := issuer.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"jti": "", "iat": time.Now().Unix(), "iss": iss, "name": name, "sub": subject, "nats": nats}
	raw, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha512.Sum512_256(raw)
	claims["jti"] = base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(hash[:])
	if raw, err = json.Marshal(claims); err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(`{"typ":"JWT","alg":"ed25519-nkey"}`)) + "." + enc.EncodeToString(raw)
	sig, err := issuer.Sign([]byte(signed))
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + enc.EncodeToString(sig)
}
