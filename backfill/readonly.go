package backfill

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// readOnly runs f in a transaction that walhook opens read-only on conn
// (BEGIN READ ONLY, a statement of its own) and ends itself. Every
// statement f sends on conn is in it: a backfill's statements go through
// the extended protocol, one statement each, so no text they carry can
// end the transaction or make it writable. The transaction ends with a
// rollback: there is nothing to commit, and a rollback also undoes a
// session setting a condition changed (set_config(..., false)).
func readOnly(ctx context.Context, conn *pgx.Conn, f func() error) error {
	tx, err := beginReadOnly(ctx, conn)
	if err != nil {
		return err
	}
	err = f()
	if rerr := tx.Rollback(ctx); err == nil {
		err = rerr
	}
	return err
}

// beginReadOnly opens a read-only transaction on conn.
func beginReadOnly(ctx context.Context, conn *pgx.Conn) (pgx.Tx, error) {
	return conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
}

// beginReadOnlySnapshot opens a read-only transaction on conn whose
// statements all see one snapshot (REPEATABLE READ): a chunk's read, whose
// snapshot is recorded first.
func beginReadOnlySnapshot(ctx context.Context, conn *pgx.Conn) (pgx.Tx, error) {
	return conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
}
