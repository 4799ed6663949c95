package spool

// CPUTime is cpuTime for the external tests (package spool_test).
var CPUTime = cpuTime
