package bench

import (
	"context"
	"errors"
	"os"

	"github.com/batchproc/batchproc/spool"
)

// BatchprocSpool is batchproc with a disk spool (spool.WithSpool, default
// sync mode: an fsync per batch with group commit) in a temporary
// directory removed after the run: the spool's cost next to the seed's
// designs.
const BatchprocSpool = "batchproc-spool"

func init() {
	designSpecs[BatchprocSpool] = designSpec{name: BatchprocSpool,
		doc: "batchproc with spool.WithSpool (fsync per batch, group commit) in a temporary directory",
		newClient: func(env designEnv) (Client, error) {
			dir, err := os.MkdirTemp("", "batchbench-spool-")
			if err != nil {
				return nil, err
			}
			c, err := newBatchprocClient(env, spool.WithSpool(dir))
			if err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
			return &spoolClient{batchprocClient: c, dir: dir}, nil
		}}
}

// spoolClient removes its spool directory after Shutdown.
type spoolClient struct {
	*batchprocClient
	dir string
}

func (c *spoolClient) Shutdown(ctx context.Context) error {
	err := c.batchprocClient.Shutdown(ctx)
	return errors.Join(err, os.RemoveAll(c.dir))
}
