//go:build tools

// Package tools pins the upstream Prometheus server used by the elasticity tests as a real metrics source.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
