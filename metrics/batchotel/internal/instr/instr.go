// Package instr makes the asynchronous instruments of batchotel and
// spoolotel, collecting the meter's errors, and converts their counters.
package instr

import (
	"errors"
	"math"

	"go.opentelemetry.io/otel/metric"
)

// Builder makes instruments from Meter; Err joins what the meter refused.
type Builder struct {
	Meter metric.Meter
	errs  []error
}

// Counter makes an Int64ObservableCounter.
func (b *Builder) Counter(name, unit, desc string) metric.Int64ObservableCounter {
	c, err := b.Meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	return c
}

// UpDown makes an Int64ObservableUpDownCounter.
func (b *Builder) UpDown(name, unit, desc string) metric.Int64ObservableUpDownCounter {
	c, err := b.Meter.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	return c
}

// Add records the error of an instrument made elsewhere.
func (b *Builder) Add(err error) { b.errs = append(b.errs, err) }

// Err is every error the meter returned, joined; nil if none.
func (b *Builder) Err() error { return errors.Join(b.errs...) }

// Clamp converts a Stats counter to OpenTelemetry's int64 (2^63 events are
// centuries away at any rate, but a wrap would read as a reset).
func Clamp(v uint64) int64 { return int64(min(v, math.MaxInt64)) }
