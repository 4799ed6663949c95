// Package pgtest gives tests a private, empty PostgreSQL schema on the
// throwaway server that scripts/test.sh starts (env BATCHPROC_TEST_POSTGRES).
package pgtest

import (
	"context"
	"crypto/rand"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable holding the server the tests use.
const EnvDSN = "BATCHPROC_TEST_POSTGRES"

// DSN returns the DSN of a fresh, empty schema on the test server,
// dropped when tb ends, so tests run in parallel and repeatedly. Without a
// server it skips tb, or fails it when env CI is set: in CI nothing skips.
func DSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not set (CI is set, so PostgreSQL tests must run): start a server with eval \"$(scripts/pg-start.sh)\"", EnvDSN)
		}
		tb.Skipf("%s is not set; start a throwaway server with: eval \"$(scripts/pg-start.sh)\" (stop it with scripts/pg-stop.sh)", EnvDSN)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect to %s: %v", EnvDSN, err)
	}
	defer admin.Close(ctx)
	name := "batchproc_test_" + strings.ToLower(rand.Text())
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
		}
	})
	return withSearchPath(tb, dsn, name)
}

// withSearchPath returns dsn with search_path set to schema, in the DSN's
// own syntax (URL or key=value).
func withSearchPath(tb testing.TB, dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("%s: %v", EnvDSN, err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}
