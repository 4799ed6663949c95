package batchproc

import (
	"math/rand/v2"
	"time"
)

// backoff returns the wait before retry number attempt (1 after the first
// failed send): "full jitter", uniform in [0, min(MaxBackoff,
// InitialBackoff*2^(attempt-1))). Full jitter spreads the retries of many
// clients that failed together, so they do not return together.
func backoff(p RetryPolicy, attempt int) time.Duration {
	ceil := p.InitialBackoff
	for i := 1; i < attempt && ceil < p.MaxBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, p.MaxBackoff)
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}
