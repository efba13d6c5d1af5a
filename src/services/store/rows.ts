/**
 * Conversion between SQLite rows (snake_case columns, JSON text) and the records in
 * `src/shared/records.ts`.
 */
import type { ErrorPayload } from '../../shared/errors';
import type { LogLevel, StepMetrics } from '../../shared/protocol';
import type {
  ArtifactKind,
  ArtifactRecord,
  DatasetRecord,
  MetricRow,
  ModelRecord,
  RunEvent,
  RunRecord,
  RunStatus,
} from '../../shared/records';
import type { Method, TrainConfig } from '../../shared/train-config';

export interface ModelRow {
  id: string;
  path: string;
  name: string;
  architecture: string;
  parameter_count: number | null;
  added_at: string;
}

export interface DatasetRow {
  id: string;
  name: string;
  source_path: string;
  format: string;
  schema: string;
  sha256: string;
  rows_read: number;
  rows_kept: number;
  rows_skipped: number;
  stored_path: string;
  report_json: string;
  created_at: string;
}

export interface RunRow {
  id: string;
  name: string;
  model_path: string;
  dataset_id: string | null;
  method: Method;
  status: RunStatus;
  config_json: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  error_json: string | null;
  tags_json: string;
  best_val_loss: number | null;
  final_loss: number | null;
  steps: number;
  total_steps: number | null;
  run_dir: string;
}

export interface MetricDbRow {
  run_id: string;
  step: number;
  epoch: number | null;
  loss: number | null;
  val_loss: number | null;
  lr: number | null;
  grad_norm: number | null;
  tokens_per_s: number | null;
  memory_bytes: number | null;
  time_ms: number | null;
}

export interface ArtifactRow {
  id: number;
  run_id: string;
  kind: ArtifactKind;
  path: string;
  step: number | null;
  created_at: string;
  size_bytes: number | null;
}

export interface EventRow {
  id: number;
  run_id: string;
  time: string;
  level: LogLevel;
  message: string;
}

export function toModelRecord(row: ModelRow): ModelRecord {
  return {
    id: row.id,
    path: row.path,
    name: row.name,
    architecture: row.architecture,
    parameterCount: row.parameter_count,
    addedAt: row.added_at,
  };
}

export function toDatasetRecord(row: DatasetRow): DatasetRecord {
  return {
    id: row.id,
    name: row.name,
    sourcePath: row.source_path,
    format: row.format,
    schema: row.schema,
    sha256: row.sha256,
    rowsRead: row.rows_read,
    rowsKept: row.rows_kept,
    rowsSkipped: row.rows_skipped,
    storedPath: row.stored_path,
    report: JSON.parse(row.report_json) as unknown,
    createdAt: row.created_at,
  };
}

export function toRunRecord(row: RunRow): RunRecord {
  return {
    id: row.id,
    name: row.name,
    modelPath: row.model_path,
    datasetId: row.dataset_id,
    method: row.method,
    status: row.status,
    config: JSON.parse(row.config_json) as TrainConfig,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    error: row.error_json === null ? null : (JSON.parse(row.error_json) as ErrorPayload),
    tags: JSON.parse(row.tags_json) as string[],
    bestValLoss: row.best_val_loss,
    finalLoss: row.final_loss,
    steps: row.steps,
    totalSteps: row.total_steps,
    runDir: row.run_dir,
  };
}

/** SQLite stores NaN as NULL, so a NULL measurement reads back as NaN. */
function nullToNaN(value: number | null): number {
  return value === null ? Number.NaN : value;
}

export function toMetricRow(row: MetricDbRow): MetricRow {
  const metric: MetricRow = {
    runId: row.run_id,
    step: row.step,
    epoch: nullToNaN(row.epoch),
    loss: nullToNaN(row.loss),
    lr: nullToNaN(row.lr),
    gradNorm: nullToNaN(row.grad_norm),
    tokensPerSecond: nullToNaN(row.tokens_per_s),
    memoryBytes: nullToNaN(row.memory_bytes),
    timeMs: nullToNaN(row.time_ms),
  };
  if (row.val_loss !== null) metric.valLoss = row.val_loss;
  return metric;
}

/** Named parameters for the metrics upsert statement. */
export function toMetricParams(runId: string, metrics: StepMetrics): Record<string, number | string | null> {
  return {
    run_id: runId,
    step: metrics.step,
    epoch: metrics.epoch,
    loss: metrics.loss,
    val_loss: metrics.valLoss ?? null,
    lr: metrics.lr,
    grad_norm: metrics.gradNorm,
    tokens_per_s: metrics.tokensPerSecond,
    memory_bytes: metrics.memoryBytes,
    time_ms: metrics.timeMs,
  };
}

export function toArtifactRecord(row: ArtifactRow): ArtifactRecord {
  return {
    id: row.id,
    runId: row.run_id,
    kind: row.kind,
    path: row.path,
    step: row.step,
    createdAt: row.created_at,
    sizeBytes: row.size_bytes,
  };
}

export function toRunEvent(row: EventRow): RunEvent {
  return { id: row.id, runId: row.run_id, time: row.time, level: row.level, message: row.message };
}
