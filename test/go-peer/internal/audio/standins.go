// Stand-ins for what the original's ipc.go takes from the rest of its package:
// the latency monitor, the adaptive optimizer and buffer manager, the socket
// buffer settings and their metrics. None of them touches the wire, so each is
// a no-op here; what goes over the socket is ipc.go's own code.
package audio

import (
	"net"
	"time"

	"github.com/rs/zerolog"
)

type LatencyConfig struct{}

func DefaultLatencyConfig() LatencyConfig { return LatencyConfig{} }

type LatencyMonitor struct{}

func NewLatencyMonitor(LatencyConfig, zerolog.Logger) *LatencyMonitor { return &LatencyMonitor{} }

func (*LatencyMonitor) Start()                              {}
func (*LatencyMonitor) Stop()                               {}
func (*LatencyMonitor) RecordLatency(time.Duration, string) {}

type AdaptiveBufferConfig struct{}

func DefaultAdaptiveBufferConfig() AdaptiveBufferConfig { return AdaptiveBufferConfig{} }

type AdaptiveBufferManager struct{}

func NewAdaptiveBufferManager(AdaptiveBufferConfig) *AdaptiveBufferManager {
	return &AdaptiveBufferManager{}
}

type OptimizerConfig struct{}

func DefaultOptimizerConfig() OptimizerConfig { return OptimizerConfig{} }

type AdaptiveOptimizer struct{}

func NewAdaptiveOptimizer(*LatencyMonitor, *AdaptiveBufferManager, OptimizerConfig, zerolog.Logger) *AdaptiveOptimizer {
	return &AdaptiveOptimizer{}
}

func (*AdaptiveOptimizer) Start() {}
func (*AdaptiveOptimizer) Stop()  {}

type SocketBufferConfig struct{}

func DefaultSocketBufferConfig() SocketBufferConfig { return SocketBufferConfig{} }

func ConfigureSocketBuffers(net.Conn, SocketBufferConfig) error { return nil }

func RecordSocketBufferMetrics(net.Conn, string) {}
