/**
 * Prometheus metrics: `metricsHandler(cluster)` serves a cluster's counters
 * and histograms in the text format; `Exposition` and `Histogram` write the
 * format for anything else.
 *
 * @module
 */
export { clusterMetrics, metricsHandler, type MetricsOptions } from "./cluster.ts";
export {
  escapeHelp,
  escapeLabelValue,
  Exposition,
  formatValue,
  Histogram,
  type HistogramSnapshot,
  type Labels,
  PROMETHEUS_CONTENT_TYPE,
} from "./exposition.ts";
export { LATENCY_BUCKETS_S, requestReplicationStats, type RequestReplicationStats } from "./request_latency.ts";
