/**
 * Rows of the run store as plain objects, shared by the services, IPC, the web bridge and the
 * renderer. Timestamps are ISO 8601 strings in UTC (`2025-01-31T12:00:00.000Z`), so they sort as text
 * and survive JSON and structured clone unchanged.
 */
import type { ErrorPayload } from './errors';
import type { LogLevel, StepMetrics } from './protocol';
import type { Method, TrainConfig } from './train-config';

/** A Hugging Face model folder the user has added. */
export interface ModelRecord {
  id: string;
  /** Absolute path of the model folder; unique among models. */
  path: string;
  name: string;
  /** `architectures[0]` of the folder's `config.json`, e.g. `LlamaForCausalLM`. */
  architecture: string;
  /** Parameter count of the base model, or null when it was not counted. */
  parameterCount: number | null;
  addedAt: string;
}

/** An imported dataset and its normalized copy in the app data folder. */
export interface DatasetRecord {
  id: string;
  name: string;
  /** The file the user imported. */
  sourcePath: string;
  /** Detected file format: `jsonl`, `json`, `csv`, `tsv`, `parquet` or `text`. */
  format: string;
  /** Detected row schema, e.g. `text`, `prompt-completion`, `instruction`, `messages`, `sharegpt`. */
  schema: string;
  /** SHA-256 of the normalized copy, as lowercase hex. */
  sha256: string;
  rowsRead: number;
  rowsKept: number;
  rowsSkipped: number;
  /** The normalized copy under `<appDataDir>/datasets/<id>/`. */
  storedPath: string;
  /** The import's validation report, stored as JSON and parsed back; its shape belongs to the importer. */
  report: unknown;
  createdAt: string;
}

export const RUN_STATUSES = ['queued', 'running', 'paused', 'completed', 'failed', 'cancelled', 'interrupted'] as const;

/**
 * Lifecycle of a run. `interrupted` marks a run that was `running`, `paused` or `queued` when the
 * app stopped. Such a run can be resumed from its latest checkpoint.
 */
export type RunStatus = (typeof RUN_STATUSES)[number];

/** Statuses after which no worker belongs to the run any more. */
export const FINISHED_RUN_STATUSES: readonly RunStatus[] = ['completed', 'failed', 'cancelled', 'interrupted'];

export interface RunRecord {
  /** Readable and sortable: `run-YYYYMMDD-HHMMSS-xxxx` with the UTC creation time and 4 random hex digits. */
  id: string;
  name: string;
  modelPath: string;
  /** The dataset store entry the run trains on, or null for a file given by path (CLI) or a deleted dataset. */
  datasetId: string | null;
  method: Method;
  status: RunStatus;
  config: TrainConfig;
  createdAt: string;
  /** When a worker first started training this run. */
  startedAt: string | null;
  /** When the run last reached a finished status; cleared when it is resumed. */
  finishedAt: string | null;
  /** The failure that ended the run, or null. */
  error: ErrorPayload | null;
  tags: string[];
  /** Lowest validation loss reported so far, or null before the first evaluation. */
  bestValLoss: number | null;
  /** Training loss of the highest step reported so far. */
  finalLoss: number | null;
  /** Highest optimizer step reported so far. */
  steps: number;
  /** Planned number of optimizer steps, once the worker has reported it. */
  totalSteps: number | null;
  /** `<appDataDir>/runs/<id>/`, with `checkpoints/` and `exports/` inside. */
  runDir: string;
}

/** One optimizer step of one run. */
export interface MetricRow extends StepMetrics {
  runId: string;
}

export type ArtifactKind = 'checkpoint' | 'adapter' | 'merged' | 'gguf';

/** A file or folder a run produced. */
export interface ArtifactRecord {
  id: number;
  runId: string;
  kind: ArtifactKind;
  path: string;
  /** Optimizer step the artifact was written at, or null when unknown. */
  step: number | null;
  createdAt: string;
  /** Size on disk (a folder counts the files inside it), or null when it was not measured. */
  sizeBytes: number | null;
}

/** One line of a run's log. */
export interface RunEvent {
  id: number;
  runId: string;
  time: string;
  level: LogLevel;
  message: string;
}
