/**
 * The run store: one SQLite file, `<appDataDir>/studio.db`, holding models, datasets, runs, their
 * per-step metrics, artifacts and log events. Files (datasets, checkpoints, exports) live beside it;
 * the store records their paths and never deletes them.
 *
 * better-sqlite3 is synchronous: every method returns once its statement has committed.
 */
import { mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import Database from 'better-sqlite3';
import { StudioError, type ErrorCode, type ErrorPayload } from '../../shared/errors';
import type { LogLevel, StepMetrics } from '../../shared/protocol';
import {
  RUN_STATUSES,
  type ArtifactKind,
  type ArtifactRecord,
  type DatasetRecord,
  type MetricRow,
  type ModelRecord,
  type RunEvent,
  type RunRecord,
  type RunStatus,
} from '../../shared/records';
import type { Method, TrainConfig } from '../../shared/train-config';
import { createDatasetId, createModelId, createRunId } from './ids';
import {
  toArtifactRecord,
  toDatasetRecord,
  toMetricParams,
  toMetricRow,
  toModelRecord,
  toRunEvent,
  toRunRecord,
  type ArtifactRow,
  type DatasetRow,
  type EventRow,
  type MetricDbRow,
  type ModelRow,
  type RunRow,
} from './rows';
import { MIGRATIONS, SCHEMA_VERSION, migrate, readUserVersion } from './schema';

export { MetricsBuffer, type MetricsBufferOptions } from './metrics-buffer';
export { createDatasetId, createRunId } from './ids';
export { SCHEMA_VERSION } from './schema';

export const DATABASE_FILE_NAME = 'studio.db';

/** The code of an unreadable, damaged or too new studio.db. */
const STORE_FILE_ERROR: ErrorCode = 'STORE_UNREADABLE';

/** How long a statement waits for a lock held by another connection (the CLI or web bridge). */
const BUSY_TIMEOUT_MS = 5000;

/** Statuses in which a worker may still own the run. */
const LIVE_STATUSES: readonly RunStatus[] = ['queued', 'running', 'paused'];

export interface NewModel {
  path: string;
  name: string;
  architecture: string;
  parameterCount?: number | null;
}

/** A dataset to insert; `id` may be chosen by the importer (see createDatasetId) before it writes files. */
export type NewDataset = Omit<DatasetRecord, 'id' | 'createdAt'> & { id?: string; createdAt?: string };

export interface CreateRunOptions {
  /** Display name; defaults to `config.name`, then to `<model folder> <method>`. */
  name?: string;
  /** Dataset store id; must exist. Defaults to `config.datasetId` when that names a stored dataset. */
  datasetId?: string | null;
}

export type RunSortKey =
  | 'createdAt'
  | 'startedAt'
  | 'finishedAt'
  | 'name'
  | 'status'
  | 'method'
  | 'bestValLoss'
  | 'finalLoss'
  | 'steps';

const SORT_COLUMNS: Record<RunSortKey, string> = {
  createdAt: 'created_at',
  startedAt: 'started_at',
  finishedAt: 'finished_at',
  name: 'name COLLATE NOCASE',
  status: 'status',
  method: 'method',
  bestValLoss: 'best_val_loss',
  finalLoss: 'final_loss',
  steps: 'steps',
};

export interface RunQuery {
  /** Case-insensitive substring of the name, id, model path or tags. */
  search?: string;
  status?: RunStatus | RunStatus[];
  method?: Method;
  datasetId?: string;
  /** Default `createdAt`. Runs without a value in the sort column come last in both orders. */
  sort?: RunSortKey;
  /** Default `desc`. */
  order?: 'asc' | 'desc';
  /** Default: no limit. */
  limit?: number;
  offset?: number;
}

/** Fields updated together with a status; an omitted field keeps its stored value, null clears it. */
export interface RunStatusPatch {
  error?: ErrorPayload | null;
  startedAt?: string | null;
  finishedAt?: string | null;
}

export interface RunSummary {
  steps?: number;
  finalLoss?: number | null;
  bestValLoss?: number | null;
}

export interface NewArtifact {
  runId: string;
  kind: ArtifactKind;
  path: string;
  step?: number | null;
  sizeBytes?: number | null;
  createdAt?: string;
}

export interface EventQuery {
  /** Return only the latest `limit` events (still in chronological order). Default 1000. */
  limit?: number;
  /** Return only events with an id greater than this, for incremental reads. */
  afterId?: number;
}

export interface MetricsQuery {
  /** Return only steps greater than this, for incremental reads. */
  afterStep?: number;
}

function now(): string {
  return new Date().toISOString();
}

function isSqliteError(error: unknown): error is InstanceType<Database.SqliteError> {
  return error instanceof Database.SqliteError;
}

/** Escapes `%`, `_` and `\` so user text matches literally in `LIKE ... ESCAPE '\'`. */
function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (char) => `\\${char}`);
}

function runNotFound(id: string): StudioError {
  return new StudioError(
    'NOT_FOUND',
    `Run "${id}" was not found.`,
    'It may have been deleted; refresh the run list.',
  );
}

function datasetNotFound(id: string): StudioError {
  return new StudioError(
    'NOT_FOUND',
    `Dataset "${id}" was not found.`,
    'Import the dataset first, or pass its file path instead of an id.',
  );
}

function modelNotFound(id: string): StudioError {
  return new StudioError('NOT_FOUND', `Model "${id}" was not found.`, 'Add the model folder again.');
}

/** Throws INVALID_ARGUMENT unless `value` is a finite integer >= `min`. */
function requireInteger(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new StudioError(
      'INVALID_ARGUMENT',
      `Expected ${name} to be an integer >= ${min}. Received: ${name}=${String(value)}.`,
    );
  }
  return value;
}

/**
 * Wraps errors of the open sequence in a StudioError that names the database file.
 * SQLITE_NOTADB and SQLITE_CORRUPT mean the file itself is damaged; it is left untouched.
 */
function toOpenError(file: string, error: unknown): StudioError {
  if (error instanceof StudioError) return error;
  if (isSqliteError(error) && (error.code === 'SQLITE_NOTADB' || error.code === 'SQLITE_CORRUPT')) {
    return new StudioError(
      STORE_FILE_ERROR,
      `The run database ${file} is not a readable SQLite database (${error.code}: ${error.message}).`,
      `The file was left unchanged. Quit the app, move ${file} (and any ${basename(file)}-wal and ` +
        `${basename(file)}-shm beside it) to another folder, and start again to create an empty database.`,
    );
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new StudioError(
    STORE_FILE_ERROR,
    `Failed to open the run database ${file}: ${reason}`,
    'Check that the app data folder exists, is writable, and is not on a full disk.',
  );
}

function prepareStatements(db: Database.Database) {
  return {
    upsertModel: db.prepare<[Record<string, unknown>], ModelRow>(
      `INSERT INTO models (id, path, name, architecture, parameter_count, added_at)
       VALUES (@id, @path, @name, @architecture, @parameter_count, @added_at)
       ON CONFLICT (path) DO UPDATE SET
         name = excluded.name,
         architecture = excluded.architecture,
         parameter_count = excluded.parameter_count
       RETURNING *`,
    ),
    getModel: db.prepare<[string], ModelRow>('SELECT * FROM models WHERE id = ?'),
    listModels: db.prepare<[], ModelRow>('SELECT * FROM models ORDER BY added_at DESC, id'),
    deleteModel: db.prepare<[string]>('DELETE FROM models WHERE id = ?'),

    insertDataset: db.prepare<[Record<string, unknown>], DatasetRow>(
      `INSERT INTO datasets (id, name, source_path, format, schema, sha256, rows_read, rows_kept,
         rows_skipped, stored_path, report_json, created_at)
       VALUES (@id, @name, @source_path, @format, @schema, @sha256, @rows_read, @rows_kept,
         @rows_skipped, @stored_path, @report_json, @created_at)
       RETURNING *`,
    ),
    getDataset: db.prepare<[string], DatasetRow>('SELECT * FROM datasets WHERE id = ?'),
    listDatasets: db.prepare<[], DatasetRow>('SELECT * FROM datasets ORDER BY created_at DESC, id'),
    deleteDataset: db.prepare<[string]>('DELETE FROM datasets WHERE id = ?'),
    countLiveRunsOfDataset: db.prepare<[string], { count: number }>(
      `SELECT COUNT(*) AS count FROM runs
       WHERE dataset_id = ? AND (
         status IN ('queued', 'running', 'paused')
         OR (status IN ('cancelled', 'interrupted', 'failed')
             AND EXISTS (SELECT 1 FROM artifacts WHERE artifacts.run_id = runs.id AND artifacts.kind = 'checkpoint'))
       )`,
    ),

    insertRun: db.prepare<[Record<string, unknown>], RunRow>(
      `INSERT INTO runs (id, name, model_path, dataset_id, method, status, config_json, created_at, run_dir)
       VALUES (@id, @name, @model_path, @dataset_id, @method, 'queued', @config_json, @created_at, @run_dir)
       RETURNING *`,
    ),
    getRun: db.prepare<[string], RunRow>('SELECT * FROM runs WHERE id = ?'),
    updateRunStatus: db.prepare<[Record<string, unknown>], RunRow>(
      `UPDATE runs SET
         status = @status,
         error_json = CASE WHEN @set_error THEN @error_json ELSE error_json END,
         started_at = CASE WHEN @set_started_at THEN @started_at ELSE started_at END,
         finished_at = CASE WHEN @set_finished_at THEN @finished_at ELSE finished_at END
       WHERE id = @id
       RETURNING *`,
    ),
    renameRun: db.prepare<[string, string], RunRow>('UPDATE runs SET name = ? WHERE id = ? RETURNING *'),
    setTags: db.prepare<[string, string], RunRow>('UPDATE runs SET tags_json = ? WHERE id = ? RETURNING *'),
    setTotalSteps: db.prepare<[number | null, string], RunRow>(
      'UPDATE runs SET total_steps = ? WHERE id = ? RETURNING *',
    ),
    setSummary: db.prepare<[Record<string, unknown>], RunRow>(
      `UPDATE runs SET
         steps = CASE WHEN @set_steps THEN @steps ELSE steps END,
         final_loss = CASE WHEN @set_final_loss THEN @final_loss ELSE final_loss END,
         best_val_loss = CASE WHEN @set_best_val_loss THEN @best_val_loss ELSE best_val_loss END
       WHERE id = @id
       RETURNING *`,
    ),
    deleteRun: db.prepare<[string]>('DELETE FROM runs WHERE id = ?'),
    listLiveRuns: db.prepare<[], RunRow>(
      `SELECT * FROM runs WHERE status IN ('queued', 'running', 'paused') ORDER BY created_at, id`,
    ),
    markInterrupted: db.prepare<[string, string], RunRow>(
      `UPDATE runs SET status = 'interrupted', finished_at = ? WHERE id = ? RETURNING *`,
    ),

    upsertMetric: db.prepare<[Record<string, unknown>]>(
      `INSERT INTO run_metrics (run_id, step, epoch, loss, val_loss, lr, grad_norm, tokens_per_s,
         memory_bytes, time_ms)
       VALUES (@run_id, @step, @epoch, @loss, @val_loss, @lr, @grad_norm, @tokens_per_s,
         @memory_bytes, @time_ms)
       ON CONFLICT (run_id, step) DO UPDATE SET
         epoch = excluded.epoch,
         loss = excluded.loss,
         val_loss = COALESCE(excluded.val_loss, run_metrics.val_loss),
         lr = excluded.lr,
         grad_norm = excluded.grad_norm,
         tokens_per_s = excluded.tokens_per_s,
         memory_bytes = excluded.memory_bytes,
         time_ms = excluded.time_ms`,
    ),
    // The primary key (run_id, step) serves MAX(step) and the final loss; MIN(val_loss) reads the
    // run's rows once, which is a range scan of the clustered key.
    refreshSummary: db.prepare<[{ id: string }], RunRow>(
      `UPDATE runs SET
         steps = COALESCE((SELECT MAX(step) FROM run_metrics WHERE run_id = @id), 0),
         final_loss = (SELECT loss FROM run_metrics WHERE run_id = @id ORDER BY step DESC LIMIT 1),
         best_val_loss = (SELECT MIN(val_loss) FROM run_metrics WHERE run_id = @id)
       WHERE id = @id
       RETURNING *`,
    ),
    getMetrics: db.prepare<[string, number], MetricDbRow>(
      'SELECT * FROM run_metrics WHERE run_id = ? AND step > ? ORDER BY step',
    ),
    deleteMetricsAfter: db.prepare<[string, number]>('DELETE FROM run_metrics WHERE run_id = ? AND step > ?'),

    upsertArtifact: db.prepare<[Record<string, unknown>], ArtifactRow>(
      `INSERT INTO artifacts (run_id, kind, path, step, created_at, size_bytes)
       VALUES (@run_id, @kind, @path, @step, @created_at, @size_bytes)
       ON CONFLICT (run_id, kind, path) DO UPDATE SET
         step = excluded.step,
         created_at = excluded.created_at,
         size_bytes = excluded.size_bytes
       RETURNING *`,
    ),
    listArtifacts: db.prepare<[string], ArtifactRow>('SELECT * FROM artifacts WHERE run_id = ? ORDER BY id'),
    listCheckpoints: db.prepare<[string], ArtifactRow>(
      `SELECT * FROM artifacts WHERE run_id = ? AND kind = 'checkpoint'
       ORDER BY step DESC NULLS LAST, id DESC`,
    ),

    insertEvent: db.prepare<[string, string, string, string], EventRow>(
      'INSERT INTO run_events (run_id, time, level, message) VALUES (?, ?, ?, ?) RETURNING *',
    ),
    listEvents: db.prepare<[string, number, number], EventRow>(
      `SELECT * FROM (
         SELECT * FROM run_events WHERE run_id = ? AND id > ? ORDER BY id DESC LIMIT ?
       ) ORDER BY id`,
    ),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

export class RunStore {
  readonly appDataDir: string;
  readonly file: string;
  private readonly db: Database.Database;
  private readonly statements: Statements;
  /** listRuns/countRuns statements by SQL text, since their WHERE clause depends on the filters. */
  private readonly queryCache = new Map<string, Database.Statement>();

  private constructor(appDataDir: string, file: string, db: Database.Database) {
    this.appDataDir = appDataDir;
    this.file = file;
    this.db = db;
    this.statements = prepareStatements(db);
  }

  /**
   * Opens (or creates) `<appDataDir>/studio.db` and applies pending migrations.
   * Throws a StudioError naming the file when it is not a SQLite database, is damaged, or was
   * written by a newer version of the app. In those cases the file is not modified.
   */
  static open(appDataDir: string): RunStore {
    const file = join(appDataDir, DATABASE_FILE_NAME);
    let db: Database.Database | undefined;

    try {
      mkdirSync(appDataDir, { recursive: true });
      db = new Database(file);

      // Reading the header first detects a foreign or damaged file before anything is written.
      const version = readUserVersion(db);
      if (version > SCHEMA_VERSION) {
        throw new StudioError(
          STORE_FILE_ERROR,
          `The run database ${file} has schema version ${version}, but this version of the app ` +
            `knows versions up to ${SCHEMA_VERSION}.`,
          'It was written by a newer LoRA Studio. Update the app; the file was left unchanged ' +
            'because downgrading it could lose data.',
        );
      }

      db.pragma('journal_mode = WAL');
      // NORMAL is durable across app crashes in WAL mode; only a power loss can drop the last commits.
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      migrate(db, MIGRATIONS);

      return new RunStore(appDataDir, file, db);
    } catch (error) {
      db?.close();
      throw toOpenError(file, error);
    }
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** Reads a pragma's value; for diagnostics and tests. */
  pragma(name: 'journal_mode' | 'foreign_keys' | 'busy_timeout' | 'user_version' | 'synchronous'): unknown {
    return this.db.pragma(name, { simple: true });
  }

  // Models

  /** Adds a model folder, or updates the name, architecture and size of the one with the same path. */
  upsertModel(model: NewModel): ModelRecord {
    const row = this.statements.upsertModel.get({
      id: createModelId(),
      path: model.path,
      name: model.name,
      architecture: model.architecture,
      parameter_count: model.parameterCount ?? null,
      added_at: now(),
    });
    return toModelRecord(row!);
  }

  getModel(id: string): ModelRecord {
    const row = this.statements.getModel.get(id);
    if (!row) throw modelNotFound(id);
    return toModelRecord(row);
  }

  /** Newest first. */
  listModels(): ModelRecord[] {
    return this.statements.listModels.all().map(toModelRecord);
  }

  /** Removes the model entry; the folder on disk is not touched. */
  deleteModel(id: string): void {
    const result = this.statements.deleteModel.run(id);
    if (result.changes === 0) throw modelNotFound(id);
  }

  // Datasets

  insertDataset(dataset: NewDataset): DatasetRecord {
    const id = dataset.id ?? createDatasetId();
    try {
      const row = this.statements.insertDataset.get({
        id,
        name: dataset.name,
        source_path: dataset.sourcePath,
        format: dataset.format,
        schema: dataset.schema,
        sha256: dataset.sha256,
        rows_read: dataset.rowsRead,
        rows_kept: dataset.rowsKept,
        rows_skipped: dataset.rowsSkipped,
        stored_path: dataset.storedPath,
        report_json: JSON.stringify(dataset.report ?? null),
        created_at: dataset.createdAt ?? now(),
      });
      return toDatasetRecord(row!);
    } catch (error) {
      if (isSqliteError(error) && error.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new StudioError(
          'INVALID_ARGUMENT',
          `Dataset id "${id}" already exists.`,
          'Create a new id with createDatasetId().',
        );
      }
      throw error;
    }
  }

  getDataset(id: string): DatasetRecord {
    const row = this.statements.getDataset.get(id);
    if (!row) throw datasetNotFound(id);
    return toDatasetRecord(row);
  }

  /** Newest first. */
  listDatasets(): DatasetRecord[] {
    return this.statements.listDatasets.all().map(toDatasetRecord);
  }

  /**
   * Removes the dataset entry and returns its stored path; deleting the files is the caller's job.
   * Finished runs keep their config but lose the link (dataset_id becomes NULL). A dataset that a
   * queued, running or paused run uses cannot be deleted, nor one that a cancelled, interrupted
   * or failed run with a checkpoint uses, because resuming that run reads it again.
   */
  deleteDataset(id: string): string {
    const dataset = this.getDataset(id);
    const { count } = this.statements.countLiveRunsOfDataset.get(id)!;
    if (count > 0) {
      throw new StudioError(
        'RUN_STATE',
        `Dataset "${id}" is used by ${count} queued, running or paused run(s), or by stopped runs with a checkpoint that can still be resumed.`,
        'Wait until those runs finish, or delete the stopped runs that use it, then delete the dataset.',
      );
    }
    this.statements.deleteDataset.run(id);
    return dataset.storedPath;
  }

  // Runs

  /** Creates a `queued` run with a new id; its runDir is `<appDataDir>/runs/<id>`. */
  createRun(config: TrainConfig, options: CreateRunOptions = {}): RunRecord {
    const datasetId = this.resolveRunDatasetId(config, options);
    const name = (options.name ?? config.name ?? '').trim() || `${basename(config.modelPath)} ${config.method}`;

    for (let attempt = 0; ; attempt++) {
      const id = createRunId();
      try {
        const row = this.statements.insertRun.get({
          id,
          name,
          model_path: config.modelPath,
          dataset_id: datasetId,
          method: config.method,
          config_json: JSON.stringify(config),
          created_at: now(),
          run_dir: join(this.appDataDir, 'runs', id),
        });
        return toRunRecord(row!);
      } catch (error) {
        // Two runs created in the same second share the time part; 4 random hex digits rarely collide.
        const collided = isSqliteError(error) && error.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
        if (!collided || attempt >= 10) throw error;
      }
    }
  }

  getRun(id: string): RunRecord {
    const row = this.statements.getRun.get(id);
    if (!row) throw runNotFound(id);
    return toRunRecord(row);
  }

  /** Returns the run, or undefined when no run has this id. */
  findRun(id: string): RunRecord | undefined {
    const row = this.statements.getRun.get(id);
    return row ? toRunRecord(row) : undefined;
  }

  listRuns(query: RunQuery = {}): RunRecord[] {
    const { where, params } = this.buildRunFilter(query);
    const sortKey = query.sort ?? 'createdAt';
    if (!Object.hasOwn(SORT_COLUMNS, sortKey)) {
      throw new StudioError(
        'INVALID_ARGUMENT',
        `Unknown run sort key. Received: sort=${String(sortKey)}.`,
        `Use one of: ${Object.keys(SORT_COLUMNS).join(', ')}.`,
      );
    }
    const column = SORT_COLUMNS[sortKey];
    const order = query.order ?? 'desc';
    if (order !== 'asc' && order !== 'desc') {
      throw new StudioError('INVALID_ARGUMENT', `Unknown sort order. Received: order=${String(order)}.`, 'Use asc or desc.');
    }
    const limit = query.limit === undefined ? -1 : requireInteger(query.limit, 'limit', 0);
    const offset = query.offset === undefined ? 0 : requireInteger(query.offset, 'offset', 0);

    const sql =
      `SELECT * FROM runs ${where} ORDER BY ${column} ${order.toUpperCase()} NULLS LAST, ` +
      `created_at DESC, id DESC LIMIT @limit OFFSET @offset`;
    const rows = this.cachedStatement(sql).all({ ...params, limit, offset }) as RunRow[];
    return rows.map(toRunRecord);
  }

  /** Counts the runs that listRuns returns for the same filters, ignoring limit and offset. */
  countRuns(query: RunQuery = {}): number {
    const { where, params } = this.buildRunFilter(query);
    const row = this.cachedStatement(`SELECT COUNT(*) AS count FROM runs ${where}`).get(params) as { count: number };
    return row.count;
  }

  updateRunStatus(id: string, status: RunStatus, patch: RunStatusPatch = {}): RunRecord {
    if (!RUN_STATUSES.includes(status)) {
      throw new StudioError(
        'INVALID_ARGUMENT',
        `Unknown run status. Received: status=${String(status)}.`,
        `Use one of: ${RUN_STATUSES.join(', ')}.`,
      );
    }
    const row = this.statements.updateRunStatus.get({
      id,
      status,
      set_error: patch.error !== undefined ? 1 : 0,
      error_json: patch.error ? JSON.stringify(patch.error) : null,
      set_started_at: patch.startedAt !== undefined ? 1 : 0,
      started_at: patch.startedAt ?? null,
      set_finished_at: patch.finishedAt !== undefined ? 1 : 0,
      finished_at: patch.finishedAt ?? null,
    });
    if (!row) throw runNotFound(id);
    return toRunRecord(row);
  }

  renameRun(id: string, name: string): RunRecord {
    const trimmed = typeof name === 'string' ? name.trim() : '';
    if (trimmed === '' || trimmed.length > 200) {
      throw new StudioError(
        'INVALID_ARGUMENT',
        `Expected a run name of 1 to 200 characters. Received: name=${JSON.stringify(name)}.`,
      );
    }
    const row = this.statements.renameRun.get(trimmed, id);
    if (!row) throw runNotFound(id);
    return toRunRecord(row);
  }

  /** Replaces the run's tags; tags are trimmed, empty ones dropped and duplicates removed. */
  setTags(id: string, tags: string[]): RunRecord {
    if (!Array.isArray(tags) || tags.some((tag) => typeof tag !== 'string')) {
      throw new StudioError('INVALID_ARGUMENT', `Expected tags to be an array of strings. Received: ${JSON.stringify(tags)}.`);
    }
    const cleaned = [...new Set(tags.map((tag) => tag.trim()).filter((tag) => tag !== ''))];
    const row = this.statements.setTags.get(JSON.stringify(cleaned), id);
    if (!row) throw runNotFound(id);
    return toRunRecord(row);
  }

  setTotalSteps(id: string, totalSteps: number | null): RunRecord {
    if (totalSteps !== null) requireInteger(totalSteps, 'totalSteps', 0);
    const row = this.statements.setTotalSteps.get(totalSteps, id);
    if (!row) throw runNotFound(id);
    return toRunRecord(row);
  }

  /** Overwrites summary fields with the values a worker reported at the end of the run. */
  setRunSummary(id: string, summary: RunSummary): RunRecord {
    const row = this.statements.setSummary.get({
      id,
      set_steps: summary.steps !== undefined ? 1 : 0,
      steps: summary.steps ?? 0,
      set_final_loss: summary.finalLoss !== undefined ? 1 : 0,
      final_loss: summary.finalLoss ?? null,
      set_best_val_loss: summary.bestValLoss !== undefined ? 1 : 0,
      best_val_loss: summary.bestValLoss ?? null,
    });
    if (!row) throw runNotFound(id);
    return toRunRecord(row);
  }

  /**
   * Deletes the run with its metrics, artifacts and events, and returns its runDir; deleting the
   * files is the caller's job. A queued, running or paused run must be cancelled first.
   */
  deleteRun(id: string): string {
    const run = this.getRun(id);
    if (LIVE_STATUSES.includes(run.status)) {
      throw new StudioError(
        'RUN_STATE',
        `Run "${id}" is ${run.status} and cannot be deleted.`,
        'Cancel the run first, then delete it.',
      );
    }
    this.statements.deleteRun.run(id);
    return run.runDir;
  }

  /**
   * Marks runs that a previous process left `running`, `paused` or `queued` as `interrupted`, and
   * returns them. Call it once at startup, before any worker starts.
   * NOTE: two processes sharing one app data folder (app and web bridge) would interrupt each
   * other's live runs. Only the process that holds the single-instance lock may call this.
   */
  markInterruptedOnStartup(): RunRecord[] {
    const mark = this.db.transaction(() => {
      const time = now();
      const marked: RunRow[] = [];
      for (const live of this.statements.listLiveRuns.all()) {
        marked.push(this.statements.markInterrupted.get(time, live.id)!);
        this.statements.insertEvent.run(
          live.id,
          time,
          'warn',
          `Marked interrupted: the run was ${live.status} when the app stopped.`,
        );
      }
      return marked;
    });
    return mark().map(toRunRecord);
  }

  // Metrics

  /**
   * Upserts the rows in one transaction and refreshes the run's summary (steps, finalLoss,
   * bestValLoss). A step that already exists is overwritten, except that a missing valLoss keeps
   * the stored one. Throws before writing anything if a row has an invalid step.
   */
  appendMetrics(runId: string, rows: readonly StepMetrics[]): RunRecord {
    rows.forEach((row, index) => requireInteger(row?.step, `rows[${index}].step`, 0));

    const append = this.db.transaction(() => {
      if (!this.statements.getRun.get(runId)) throw runNotFound(runId);
      for (const row of rows) this.statements.upsertMetric.run(toMetricParams(runId, row));
      return this.statements.refreshSummary.get({ id: runId })!;
    });
    return toRunRecord(append());
  }

  /** Returns the run's metrics in step order. */
  getMetrics(runId: string, query: MetricsQuery = {}): MetricRow[] {
    if (!this.statements.getRun.get(runId)) throw runNotFound(runId);
    const afterStep = query.afterStep ?? -1;
    return this.statements.getMetrics.all(runId, afterStep).map(toMetricRow);
  }

  /**
   * Deletes the metrics after `step` and refreshes the summary. A run resumed from a checkpoint at
   * `step` computes those steps again.
   */
  deleteMetricsAfter(runId: string, step: number): RunRecord {
    requireInteger(step, 'step', 0);
    const truncate = this.db.transaction(() => {
      if (!this.statements.getRun.get(runId)) throw runNotFound(runId);
      this.statements.deleteMetricsAfter.run(runId, step);
      return this.statements.refreshSummary.get({ id: runId })!;
    });
    return toRunRecord(truncate());
  }

  // Artifacts

  /** Records an artifact; a path already recorded for the run and kind is updated instead. */
  addArtifact(artifact: NewArtifact): ArtifactRecord {
    if (!this.statements.getRun.get(artifact.runId)) throw runNotFound(artifact.runId);
    const row = this.statements.upsertArtifact.get({
      run_id: artifact.runId,
      kind: artifact.kind,
      path: artifact.path,
      step: artifact.step ?? null,
      created_at: artifact.createdAt ?? now(),
      size_bytes: artifact.sizeBytes ?? null,
    });
    return toArtifactRecord(row!);
  }

  /** Returns the run's artifacts in the order they were recorded, optionally of one kind only. */
  listArtifacts(runId: string, kind?: ArtifactKind): ArtifactRecord[] {
    if (!this.statements.getRun.get(runId)) throw runNotFound(runId);
    const rows = this.statements.listArtifacts.all(runId).map(toArtifactRecord);
    return kind ? rows.filter((artifact) => artifact.kind === kind) : rows;
  }

  /** Returns the run's checkpoints, highest step first. */
  listCheckpoints(runId: string): ArtifactRecord[] {
    if (!this.statements.getRun.get(runId)) throw runNotFound(runId);
    return this.statements.listCheckpoints.all(runId).map(toArtifactRecord);
  }

  // Events

  addEvent(runId: string, level: LogLevel, message: string, time: string = now()): RunEvent {
    if (!this.statements.getRun.get(runId)) throw runNotFound(runId);
    return toRunEvent(this.statements.insertEvent.get(runId, time, level, message)!);
  }

  /** Returns the run's latest events in chronological order. */
  listEvents(runId: string, query: EventQuery = {}): RunEvent[] {
    if (!this.statements.getRun.get(runId)) throw runNotFound(runId);
    const limit = query.limit === undefined ? 1000 : requireInteger(query.limit, 'limit', 0);
    const afterId = query.afterId ?? 0;
    return this.statements.listEvents.all(runId, afterId, limit).map(toRunEvent);
  }

  // Helpers

  private resolveRunDatasetId(config: TrainConfig, options: CreateRunOptions): string | null {
    if (options.datasetId) {
      if (!this.statements.getDataset.get(options.datasetId)) throw datasetNotFound(options.datasetId);
      return options.datasetId;
    }
    if (options.datasetId === null) return null;
    // config.datasetId may also hold a file path (CLI); only a stored dataset becomes a link.
    if (config.datasetId && this.statements.getDataset.get(config.datasetId)) return config.datasetId;
    return null;
  }

  private buildRunFilter(query: RunQuery): { where: string; params: Record<string, unknown> } {
    const clauses: string[] = [];
    const params: Record<string, unknown> = {};

    const search = query.search?.trim();
    if (search) {
      clauses.push(
        `(name LIKE @search ESCAPE '\\' OR id LIKE @search ESCAPE '\\' ` +
          `OR model_path LIKE @search ESCAPE '\\' OR tags_json LIKE @search ESCAPE '\\')`,
      );
      params.search = `%${escapeLike(search)}%`;
    }

    if (query.status !== undefined) {
      const statuses = Array.isArray(query.status) ? query.status : [query.status];
      const unknown = statuses.filter((status) => !RUN_STATUSES.includes(status));
      if (unknown.length > 0) {
        throw new StudioError(
          'INVALID_ARGUMENT',
          `Unknown run status. Received: status=${unknown.join(', ')}.`,
          `Use any of: ${RUN_STATUSES.join(', ')}.`,
        );
      }
      if (statuses.length === 0) {
        clauses.push('0');
      } else {
        const names = statuses.map((status, index) => {
          params[`status${index}`] = status;
          return `@status${index}`;
        });
        clauses.push(`status IN (${names.join(', ')})`);
      }
    }

    if (query.method !== undefined) {
      clauses.push('method = @method');
      params.method = query.method;
    }
    if (query.datasetId !== undefined) {
      clauses.push('dataset_id = @datasetId');
      params.datasetId = query.datasetId;
    }

    return { where: clauses.length > 0 ? `WHERE ${clauses.join(' AND ')}` : '', params };
  }

  private cachedStatement(sql: string): Database.Statement {
    let statement = this.queryCache.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.queryCache.set(sql, statement);
    }
    return statement;
  }
}
