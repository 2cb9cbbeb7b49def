package replication

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/walhook/walhook/config"
)

// ErrNoPrimary means source.url is a hot standby and source.primary_url
// is not set, so walhook has nowhere to write what it must write.
var ErrNoPrimary = errors.New("source.url is a hot standby and source.primary_url is not set")

// Role is what walhook found source.url to be, and where it writes.
type Role struct {
	Standby bool // source.url is a hot standby (pg_is_in_recovery)
	// WriteURL is where heartbeats and backfill watermarks go: source.url
	// on a primary, source.primary_url on a standby ("" when not set).
	WriteURL string
}

// Mode names the role for check and logs.
func (r Role) Mode() string {
	switch {
	case !r.Standby:
		return "primary"
	case r.WriteURL != "":
		return "standby with primary_url"
	default:
		return "standby without primary_url"
	}
}

// DetectRole asks the server conn reaches (source.url) whether it is a
// hot standby, and picks where walhook writes. It is the one place that
// decides between source.url and source.primary_url.
func DetectRole(ctx context.Context, conn *pgx.Conn, src config.Source) (Role, error) {
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return Role{}, fmt.Errorf("ask source.url whether it is a standby: %w", err)
	}
	if !standby {
		return Role{WriteURL: src.URL}, nil
	}
	return Role{Standby: true, WriteURL: src.PrimaryURL}, nil
}

// ConnectRole connects to source.url and returns its role.
func ConnectRole(ctx context.Context, src config.Source) (Role, error) {
	conn, err := pgx.Connect(ctx, src.URL)
	if err != nil {
		return Role{}, connectError(err)
	}
	defer conn.Close(context.Background())
	return DetectRole(ctx, conn, src)
}

// ConnectWriter connects to the server that takes walhook's writes, with
// cfg's session settings applied by adjust (nil: none). On a standby
// without source.primary_url it returns ErrNoPrimary.
func ConnectWriter(ctx context.Context, role Role, adjust func(*pgx.ConnConfig)) (*pgx.Conn, error) {
	if role.WriteURL == "" {
		return nil, fmt.Errorf("%w; set source.primary_url to the primary's postgres:// URL", ErrNoPrimary)
	}
	cfg, err := pgx.ParseConfig(role.WriteURL)
	if err != nil {
		return nil, fmt.Errorf("parse the URL walhook writes to: %w", err)
	}
	if adjust != nil {
		adjust(cfg)
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// requirePublication checks that the publication exists on a standby,
// where walhook cannot create it: it must be made on the primary and
// replicated.
func requirePublication(ctx context.Context, conn *pgx.Conn, src config.Source) error {
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_publication WHERE pubname = $1", src.Publication).Scan(&n); err != nil {
		return fmt.Errorf("read publication %q: %w", src.Publication, err)
	}
	if n > 0 {
		return nil
	}
	stmt := "CREATE PUBLICATION " + pgx.Identifier{src.Publication}.Sanitize() + " FOR ALL TABLES WITH (publish_via_partition_root = true)"
	if !src.AllTables() {
		stmt = "CREATE PUBLICATION " + pgx.Identifier{src.Publication}.Sanitize() + " FOR TABLE ... WITH (publish_via_partition_root = true)"
	}
	return fmt.Errorf("%w: publication %q does not exist, and source.url is a hot standby where it cannot be created; run on the primary: %s", ErrPublicationMissing, src.Publication, stmt)
}
