// Command version prints buildinfo.String, for TestBuiltBinary: a binary
// really built by the go command, with whatever it stamps.
package main

import (
	"fmt"

	"github.com/batchproc/batchproc/internal/buildinfo"
)

func main() { fmt.Println(buildinfo.String("version")) }
