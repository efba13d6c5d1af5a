import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StudioError } from '../../src/shared/errors';
import type { StepMetrics } from '../../src/shared/protocol';
import { DEFAULT_TRAIN_CONFIG, type TrainConfig } from '../../src/shared/train-config';
import { MetricsBuffer, RunStore, SCHEMA_VERSION } from '../../src/services/store';

function makeConfig(overrides: Partial<TrainConfig> = {}): TrainConfig {
  return { ...DEFAULT_TRAIN_CONFIG, modelPath: '/models/SmolLM2-135M', maxSteps: 10, ...overrides };
}

function makeMetrics(step: number, overrides: Partial<StepMetrics> = {}): StepMetrics {
  return {
    step,
    epoch: step / 100,
    loss: 3 - step * 0.001,
    lr: 2e-4,
    gradNorm: 0.5,
    tokensPerSecond: 1200,
    memoryBytes: 1_000_000 + step,
    timeMs: step * 10,
    ...overrides,
  };
}

/** Runs `action` and returns the StudioError it throws; fails the test if it throws anything else. */
function catchStudioError(action: () => unknown): StudioError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(StudioError);
    return error as StudioError;
  }
  throw new Error('expected a StudioError, but nothing was thrown');
}

let dir: string;
let store: RunStore | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'studio-store-'));
});

afterEach(() => {
  store?.close();
  store = undefined;
  rmSync(dir, { recursive: true, force: true });
});

describe('RunStore.open', () => {
  it('migrates an empty folder to the schema version', () => {
    store = RunStore.open(dir);

    expect(existsSync(join(dir, 'studio.db'))).toBe(true);
    expect(store.pragma('user_version')).toBe(SCHEMA_VERSION);
    expect(SCHEMA_VERSION).toBeGreaterThanOrEqual(1);
  });

  it('enables WAL, foreign keys and a busy timeout', () => {
    store = RunStore.open(dir);

    expect(store.pragma('journal_mode')).toBe('wal');
    expect(store.pragma('foreign_keys')).toBe(1);
    expect(store.pragma('busy_timeout')).toBe(5000);
  });

  it('keeps data when reopened', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig(), { name: 'first run' });
    store.appendMetrics(run.id, [makeMetrics(1), makeMetrics(2)]);
    store.close();

    store = RunStore.open(dir);
    const reopened = store.getRun(run.id);
    expect(reopened.name).toBe('first run');
    expect(reopened.config.modelPath).toBe('/models/SmolLM2-135M');
    expect(reopened.steps).toBe(2);
    expect(store.getMetrics(run.id).map((row) => row.step)).toEqual([1, 2]);
    expect(store.pragma('user_version')).toBe(SCHEMA_VERSION);
  });

  it('rejects a corrupt file and leaves it unchanged', () => {
    const file = join(dir, 'studio.db');
    const garbage = Buffer.from('this is not a SQLite database, just some text that fills a page\n'.repeat(80));
    writeFileSync(file, garbage);

    const error = catchStudioError(() => RunStore.open(dir));

    expect(error.code).toBe('STORE_UNREADABLE');
    expect(error.message).toContain(file);
    expect(error.message).toContain('SQLITE_NOTADB');
    expect(error.hint).toContain('move');
    expect(readFileSync(file).equals(garbage)).toBe(true);
  });

  it('rejects a database newer than the app', () => {
    const file = join(dir, 'studio.db');
    const newer = new Database(file);
    newer.pragma(`user_version = ${SCHEMA_VERSION + 5}`);
    newer.exec('CREATE TABLE future (x INTEGER)');
    newer.close();

    const error = catchStudioError(() => RunStore.open(dir));

    expect(error.code).toBe('STORE_UNREADABLE');
    expect(error.message).toContain(file);
    expect(error.message).toContain(`schema version ${SCHEMA_VERSION + 5}`);
    expect(error.hint).toContain('Update the app');
    const check = new Database(file, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION + 5);
    expect(check.pragma('journal_mode', { simple: true })).toBe('delete');
    check.close();
  });
});

describe('RunStore runs', () => {
  it('createRun stores a queued run with its runDir', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig({ method: 'qlora' }));

    expect(run.id).toMatch(/^run-\d{8}-\d{6}-[0-9a-f]{4}$/);
    expect(run.status).toBe('queued');
    expect(run.method).toBe('qlora');
    expect(run.name).toBe('SmolLM2-135M qlora');
    expect(run.runDir).toBe(join(dir, 'runs', run.id));
    expect(run.tags).toEqual([]);
    expect(run.error).toBeNull();
    expect(run.datasetId).toBeNull();
  });

  it('createRun rejects an unknown dataset id', () => {
    store = RunStore.open(dir);
    const error = catchStudioError(() => store!.createRun(makeConfig(), { datasetId: 'ds-missing' }));

    expect(error.code).toBe('NOT_FOUND');
    expect(error.message).toContain('ds-missing');
  });

  it('unknown run ids raise NOT_FOUND', () => {
    store = RunStore.open(dir);
    const calls: Array<[string, () => unknown]> = [
      ['getRun', () => store!.getRun('run-x')],
      ['updateRunStatus', () => store!.updateRunStatus('run-x', 'running')],
      ['renameRun', () => store!.renameRun('run-x', 'name')],
      ['setTags', () => store!.setTags('run-x', ['a'])],
      ['deleteRun', () => store!.deleteRun('run-x')],
      ['appendMetrics', () => store!.appendMetrics('run-x', [makeMetrics(1)])],
      ['getMetrics', () => store!.getMetrics('run-x')],
      ['addArtifact', () => store!.addArtifact({ runId: 'run-x', kind: 'adapter', path: '/a' })],
      ['addEvent', () => store!.addEvent('run-x', 'info', 'hello')],
      ['listEvents', () => store!.listEvents('run-x')],
    ];

    for (const [name, call] of calls) {
      const error = catchStudioError(call);
      expect(error.code, name).toBe('NOT_FOUND');
      expect(error.message, name).toBe('Run "run-x" was not found.');
      expect(error.hint, name).toBeTruthy();
    }
  });

  it('updateRunStatus sets and clears fields', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());

    const running = store.updateRunStatus(run.id, 'running', { startedAt: '2025-01-01T00:00:00.000Z' });
    expect(running.status).toBe('running');
    expect(running.startedAt).toBe('2025-01-01T00:00:00.000Z');

    const failed = store.updateRunStatus(run.id, 'failed', {
      error: { code: 'NAN_LOSS', message: 'Loss became NaN at step 7.', hint: 'Lower the learning rate.' },
      finishedAt: '2025-01-01T01:00:00.000Z',
    });
    expect(failed.status).toBe('failed');
    expect(failed.startedAt).toBe('2025-01-01T00:00:00.000Z');
    expect(failed.error).toEqual({ code: 'NAN_LOSS', message: 'Loss became NaN at step 7.', hint: 'Lower the learning rate.' });

    const requeued = store.updateRunStatus(run.id, 'queued', { error: null, finishedAt: null });
    expect(requeued.error).toBeNull();
    expect(requeued.finishedAt).toBeNull();
    expect(requeued.startedAt).toBe('2025-01-01T00:00:00.000Z');
  });

  it('renameRun and setTags validate input', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());

    expect(store.renameRun(run.id, '  baseline  ').name).toBe('baseline');
    expect(catchStudioError(() => store!.renameRun(run.id, '   ')).code).toBe('INVALID_ARGUMENT');
    expect(store.setTags(run.id, ['a', ' b ', 'a', '']).tags).toEqual(['a', 'b']);
    expect(catchStudioError(() => store!.setTags(run.id, [1 as unknown as string])).code).toBe('INVALID_ARGUMENT');
  });

  it('listRuns filters, searches and sorts', () => {
    store = RunStore.open(dir);
    const alpha = store.createRun(makeConfig(), { name: 'alpha lora' });
    const beta = store.createRun(makeConfig({ method: 'qlora' }), { name: 'beta qlora' });
    const gamma = store.createRun(makeConfig(), { name: 'gamma 100%_done' });
    store.setTags(beta.id, ['keeper']);
    store.updateRunStatus(alpha.id, 'completed');
    store.updateRunStatus(beta.id, 'completed');
    store.appendMetrics(alpha.id, [makeMetrics(1, { valLoss: 2.5 })]);
    store.appendMetrics(beta.id, [makeMetrics(1, { valLoss: 1.5 })]);

    const ids = (runs: { id: string }[]) => runs.map((run) => run.id);

    expect(ids(store.listRuns({ status: 'completed', sort: 'name', order: 'asc' }))).toEqual([alpha.id, beta.id]);
    expect(ids(store.listRuns({ status: ['queued'] }))).toEqual([gamma.id]);
    expect(ids(store.listRuns({ method: 'qlora' }))).toEqual([beta.id]);
    expect(ids(store.listRuns({ search: 'BETA' }))).toEqual([beta.id]);
    expect(ids(store.listRuns({ search: 'keeper' }))).toEqual([beta.id]);
    // % and _ match literally, not as LIKE wildcards.
    expect(ids(store.listRuns({ search: '100%_' }))).toEqual([gamma.id]);
    expect(ids(store.listRuns({ search: '%' }))).toEqual([gamma.id]);
    // Runs without a validation loss come last in both orders.
    expect(ids(store.listRuns({ sort: 'bestValLoss', order: 'asc' }))).toEqual([beta.id, alpha.id, gamma.id]);
    expect(ids(store.listRuns({ sort: 'bestValLoss', order: 'desc' }))).toEqual([alpha.id, beta.id, gamma.id]);
    expect(ids(store.listRuns({ sort: 'name', order: 'desc', limit: 1, offset: 1 }))).toEqual([beta.id]);
    expect(store.countRuns({ status: 'completed' })).toBe(2);
    expect(store.countRuns()).toBe(3);

    const badSort = catchStudioError(() => store!.listRuns({ sort: 'rowid' as never }));
    expect(badSort.code).toBe('INVALID_ARGUMENT');
    expect(badSort.message).toContain('rowid');
    expect(catchStudioError(() => store!.listRuns({ status: 'done' as never })).code).toBe('INVALID_ARGUMENT');
  });

  it('markInterruptedOnStartup interrupts live runs only', () => {
    store = RunStore.open(dir);
    const running = store.createRun(makeConfig());
    const paused = store.createRun(makeConfig());
    const completed = store.createRun(makeConfig());
    store.updateRunStatus(running.id, 'running');
    store.updateRunStatus(paused.id, 'paused');
    store.updateRunStatus(completed.id, 'completed');
    store.close();

    store = RunStore.open(dir);
    const marked = store.markInterruptedOnStartup();

    expect(marked.map((run) => run.id).sort()).toEqual([running.id, paused.id].sort());
    expect(store.getRun(running.id).status).toBe('interrupted');
    expect(store.getRun(running.id).finishedAt).not.toBeNull();
    expect(store.getRun(paused.id).status).toBe('interrupted');
    expect(store.getRun(completed.id).status).toBe('completed');
    expect(store.listEvents(running.id).map((event) => event.message)).toEqual([
      'Marked interrupted: the run was running when the app stopped.',
    ]);
    expect(store.markInterruptedOnStartup()).toEqual([]);
  });

  it('deleteRun cascades to metrics, artifacts and events', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    const other = store.createRun(makeConfig());
    store.appendMetrics(run.id, [makeMetrics(1), makeMetrics(2)]);
    store.appendMetrics(other.id, [makeMetrics(1)]);
    store.addArtifact({ runId: run.id, kind: 'checkpoint', path: join(run.runDir, 'checkpoints', 'step-2'), step: 2 });
    store.addEvent(run.id, 'info', 'started');
    store.updateRunStatus(run.id, 'completed');

    expect(store.deleteRun(run.id)).toBe(run.runDir);

    const db = new Database(join(dir, 'studio.db'), { readonly: true });
    const count = (table: string, runId: string) =>
      (db.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE run_id = ?`).get(runId) as { n: number }).n;
    expect(count('run_metrics', run.id)).toBe(0);
    expect(count('artifacts', run.id)).toBe(0);
    expect(count('run_events', run.id)).toBe(0);
    expect(count('run_metrics', other.id)).toBe(1);
    db.close();
    expect(catchStudioError(() => store!.getRun(run.id)).code).toBe('NOT_FOUND');
  });

  it('deleteRun rejects a running run', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    store.updateRunStatus(run.id, 'running');

    const error = catchStudioError(() => store!.deleteRun(run.id));
    expect(error.code).toBe('RUN_STATE');
    expect(store.getRun(run.id).status).toBe('running');
  });
});

describe('RunStore metrics', () => {
  it('appendMetrics writes 1000 rows in step order', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    const rows = Array.from({ length: 1000 }, (_, index) => makeMetrics(1000 - index));

    const updated = store.appendMetrics(run.id, rows);
    const metrics = store.getMetrics(run.id);

    expect(metrics).toHaveLength(1000);
    expect(metrics.map((row) => row.step)).toEqual(Array.from({ length: 1000 }, (_, index) => index + 1));
    expect(metrics[0]).toEqual({ runId: run.id, ...makeMetrics(1) });
    expect(updated.steps).toBe(1000);
    expect(updated.finalLoss).toBeCloseTo(makeMetrics(1000).loss, 12);
    expect(store.getMetrics(run.id, { afterStep: 998 }).map((row) => row.step)).toEqual([999, 1000]);
  });

  it('appendMetrics writes nothing when a row is invalid', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());

    const error = catchStudioError(() => store!.appendMetrics(run.id, [makeMetrics(1), makeMetrics(1.5)]));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('rows[1].step');
    expect(store.getMetrics(run.id)).toEqual([]);
  });

  it('repeated step is upserted', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    store.appendMetrics(run.id, [makeMetrics(1), makeMetrics(2, { loss: 2.0, valLoss: 2.2 })]);

    store.appendMetrics(run.id, [makeMetrics(2, { loss: 1.8 })]);
    const metrics = store.getMetrics(run.id);

    expect(metrics).toHaveLength(2);
    expect(metrics[1].loss).toBe(1.8);
    // A later row without valLoss keeps the evaluated one.
    expect(metrics[1].valLoss).toBe(2.2);
    expect(store.getRun(run.id).finalLoss).toBe(1.8);
  });

  it('summary tracks best validation loss', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    store.appendMetrics(run.id, [makeMetrics(10, { valLoss: 2.0 }), makeMetrics(20, { valLoss: 1.4 })]);
    store.appendMetrics(run.id, [makeMetrics(30, { valLoss: 1.9, loss: 1.1 })]);

    const summary = store.getRun(run.id);
    expect(summary.bestValLoss).toBe(1.4);
    expect(summary.finalLoss).toBe(1.1);
    expect(summary.steps).toBe(30);

    const truncated = store.deleteMetricsAfter(run.id, 10);
    expect(truncated.steps).toBe(10);
    expect(truncated.bestValLoss).toBe(2.0);
    expect(store.getMetrics(run.id).map((row) => row.step)).toEqual([10]);
  });

  it('NaN loss round-trips as NaN', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    store.appendMetrics(run.id, [makeMetrics(1, { loss: Number.NaN, gradNorm: Number.POSITIVE_INFINITY })]);

    const [row] = store.getMetrics(run.id);
    expect(row.loss).toBeNaN();
    expect(row.gradNorm).toBe(Number.POSITIVE_INFINITY);
    expect(row.valLoss).toBeUndefined();
  });

  it('MetricsBuffer flushes every maxRows and on close', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    const buffer = new MetricsBuffer(store, run.id, { maxRows: 3, maxDelayMs: 60_000 });

    buffer.push(makeMetrics(1));
    buffer.push(makeMetrics(2));
    expect(store.getMetrics(run.id)).toHaveLength(0);
    expect(buffer.size).toBe(2);

    buffer.push(makeMetrics(3));
    expect(store.getMetrics(run.id)).toHaveLength(3);
    expect(buffer.size).toBe(0);

    buffer.push(makeMetrics(4));
    expect(buffer.close()).toBe(1);
    expect(store.getMetrics(run.id).map((row) => row.step)).toEqual([1, 2, 3, 4]);

    buffer.push(makeMetrics(5));
    expect(store.getMetrics(run.id)).toHaveLength(5);
  });

  it('MetricsBuffer flushes after maxDelayMs', async () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    const buffer = new MetricsBuffer(store, run.id, { maxRows: 100, maxDelayMs: 5 });

    buffer.push(makeMetrics(1));
    await expect.poll(() => store!.getMetrics(run.id).length, { interval: 5, timeout: 5000 }).toBe(1);
    expect(buffer.size).toBe(0);
    buffer.close();
  });

  it('MetricsBuffer keeps rows when a flush fails', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    const buffer = new MetricsBuffer(store, run.id, { maxRows: 100 });
    buffer.push(makeMetrics(1));
    buffer.push(makeMetrics(2));

    store.close();

    expect(() => buffer.flush()).toThrow();
    expect(buffer.size).toBe(2);

    store = RunStore.open(dir);
    expect(store.getMetrics(run.id)).toEqual([]);
  });
});

describe('RunStore datasets, models, artifacts and events', () => {
  const dataset = {
    name: 'alpaca sample',
    sourcePath: '/data/alpaca.jsonl',
    format: 'jsonl',
    schema: 'instruction',
    sha256: 'ab'.repeat(32),
    rowsRead: 120,
    rowsKept: 118,
    rowsSkipped: 2,
    storedPath: '/app/datasets/x/data.jsonl',
    report: { skipped: [{ line: 7, reason: 'missing "output"' }] },
  };

  it('inserts, lists and deletes datasets', () => {
    store = RunStore.open(dir);
    const inserted = store.insertDataset({ id: 'ds-1', ...dataset });

    expect(store.getDataset('ds-1')).toEqual(inserted);
    expect(inserted.report).toEqual(dataset.report);
    expect(store.listDatasets().map((record) => record.id)).toEqual(['ds-1']);
    expect(catchStudioError(() => store!.insertDataset({ id: 'ds-1', ...dataset })).code).toBe('INVALID_ARGUMENT');

    const run = store.createRun(makeConfig(), { datasetId: 'ds-1' });
    expect(run.datasetId).toBe('ds-1');
    expect(catchStudioError(() => store!.deleteDataset('ds-1')).code).toBe('RUN_STATE');

    store.updateRunStatus(run.id, 'completed');
    expect(store.deleteDataset('ds-1')).toBe(dataset.storedPath);
    expect(store.getRun(run.id).datasetId).toBeNull();
    expect(store.getRun(run.id).config.modelPath).toBe('/models/SmolLM2-135M');
    expect(catchStudioError(() => store!.getDataset('ds-1')).code).toBe('NOT_FOUND');
  });

  it('upsertModel keeps one row per path', () => {
    store = RunStore.open(dir);
    const first = store.upsertModel({ path: '/models/gpt2', name: 'gpt2', architecture: 'GPT2LMHeadModel' });
    const second = store.upsertModel({
      path: '/models/gpt2',
      name: 'GPT-2',
      architecture: 'GPT2LMHeadModel',
      parameterCount: 124_439_808,
    });

    expect(second.id).toBe(first.id);
    expect(store.listModels()).toEqual([second]);
    expect(second.parameterCount).toBe(124_439_808);
    expect(second.name).toBe('GPT-2');
  });

  it('artifacts upsert by path and checkpoints sort by step', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    store.addArtifact({ runId: run.id, kind: 'checkpoint', path: '/c/step-10', step: 10, sizeBytes: 100 });
    store.addArtifact({ runId: run.id, kind: 'checkpoint', path: '/c/step-20', step: 20, sizeBytes: 100 });
    store.addArtifact({ runId: run.id, kind: 'checkpoint', path: '/c/step-10', step: 10, sizeBytes: 150 });
    store.addArtifact({ runId: run.id, kind: 'adapter', path: '/a', step: 20 });

    expect(store.listArtifacts(run.id)).toHaveLength(3);
    expect(store.listArtifacts(run.id, 'adapter').map((artifact) => artifact.path)).toEqual(['/a']);
    const checkpoints = store.listCheckpoints(run.id);
    expect(checkpoints.map((artifact) => artifact.step)).toEqual([20, 10]);
    expect(checkpoints[1].sizeBytes).toBe(150);
  });

  it('listEvents returns the latest events in order', () => {
    store = RunStore.open(dir);
    const run = store.createRun(makeConfig());
    for (let index = 1; index <= 5; index++) store.addEvent(run.id, 'info', `line ${index}`);

    expect(store.listEvents(run.id, { limit: 2 }).map((event) => event.message)).toEqual(['line 4', 'line 5']);
    const all = store.listEvents(run.id);
    expect(all).toHaveLength(5);
    expect(store.listEvents(run.id, { afterId: all[2].id }).map((event) => event.message)).toEqual(['line 4', 'line 5']);
  });
});
