package spool

const crashChildEnv = "SPOOL_CRASH_CHILD"

func crashChild() {}
