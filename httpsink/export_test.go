package httpsink

// ReportServerTimeHook lets the external tests see what the sink reports.
var ReportServerTimeHook = &reportServerTime
