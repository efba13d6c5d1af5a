/**
 * The run history under stress: damaged and read-only data folders, a second process on the same
 * folder, and workers that die between a checkpoint and the next metrics flush. Earlier runs,
 * datasets and metrics must survive each case.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { openContext } from '../../src/cli/context';
import { DatasetService } from '../../src/services/datasets';
import { JobManager, silentLogger } from '../../src/services/jobs';
import { RunStore } from '../../src/services/store';
import type { StepMetrics } from '../../src/shared/protocol';
import { ScriptedTransport, catchStudioError, makeReadOnly, makeScratch, openTestStudio, trainConfigFor, writeTokenRows } from '../helpers/adversarial';
import { modelDir } from '../helpers/fixtures';

const scratch = makeScratch('store');
const children: ChildProcess[] = [];
const stores: RunStore[] = [];

afterEach(() => {
  for (const store of stores.splice(0)) store.close();
  for (const child of children.splice(0)) child.kill('SIGKILL');
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function freshDir(name: string): string {
  const dir = path.join(scratch, name);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

function openStore(dir: string): RunStore {
  const store = RunStore.open(dir);
  stores.push(store);
  return store;
}

/** A process that stays alive and holds `<dir>/studio.lock`, as a web bridge on `dir` does. */
function holdLock(dir: string): ChildProcess {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  children.push(child);
  fs.writeFileSync(path.join(dir, 'studio.lock'), String(child.pid));
  return child;
}

function metricsAt(step: number): StepMetrics {
  return { step, epoch: step / 100, loss: 2 + 1 / step, lr: 1e-3, gradNorm: 1, tokensPerSecond: 100, memoryBytes: 1, timeMs: 5 };
}

describe('damaged or read-only data folder', () => {
  it('garbage studio.db is rejected and left unchanged', () => {
    const dir = freshDir('garbage');
    const garbage = Buffer.from('SQLite format 3\0' + 'not really a database '.repeat(200));
    fs.writeFileSync(path.join(dir, 'studio.db'), garbage);

    const error = catchStudioError(() => openTestStudio(dir));
    expect(error.code).toBe('STORE_UNREADABLE');
    expect(error.message).toContain(path.join(dir, 'studio.db'));
    expect(error.hint).toContain('left unchanged');
    expect(fs.readFileSync(path.join(dir, 'studio.db')).equals(garbage)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['studio.db']);
  });

  it('read-only folder is rejected and history survives', (context) => {
    const dir = freshDir('read-only');
    const store = RunStore.open(dir);
    const run = store.createRun(trainConfigFor(modelDir('llama-gqa-untied'), { name: 'kept' }));
    store.close();

    const restore = makeReadOnly(dir);
    if (!restore) {
      context.skip();
      return;
    }
    try {
      const error = catchStudioError(() => RunStore.open(dir));
      expect(error.code).toBe('STORE_UNREADABLE');
      expect(error.message).toContain(path.join(dir, 'studio.db'));
    } finally {
      restore();
    }
    expect(openStore(dir).getRun(run.id).name).toBe('kept');
  });
});

/** The schema SQL and user_version that RunStore.open writes to a new database. */
function schemaOf(dir: string): { statements: string[]; version: number } {
  const store = RunStore.open(dir);
  store.close();
  const db = new Database(path.join(dir, 'studio.db'), { readonly: true });
  try {
    const rows = db.prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid").all() as { sql: string }[];
    return { statements: rows.map((row) => row.sql), version: db.pragma('user_version', { simple: true }) as number };
  } finally {
    db.close();
  }
}

/**
 * Another connection (a thread standing in for a second process) that creates the schema of a
 * new studio.db in one transaction and commits it `delayMs` after it reports 'locked'.
 */
function migrateElsewhere(file: string, schema: { statements: string[]; version: number }, delayMs: number): Worker {
  const source = `
    const Database = require('better-sqlite3');
    const { parentPort, workerData } = require('node:worker_threads');
    const db = new Database(workerData.file);
    db.pragma('journal_mode = WAL');
    db.exec('BEGIN IMMEDIATE');
    for (const statement of workerData.statements) db.exec(statement);
    db.pragma('user_version = ' + workerData.version);
    parentPort.postMessage('locked');
    setTimeout(() => { db.exec('COMMIT'); db.close(); parentPort.postMessage('committed'); }, workerData.delayMs);
  `;
  return new Worker(source, { eval: true, workerData: { file, ...schema, delayMs } });
}

describe('a second process on the same folder', () => {
  // When two processes open a new data folder at once (the web bridge and a CLI command, or two
  // CLI commands), the second waits for the first one's write lock. migrate() reads user_version
  // again inside BEGIN IMMEDIATE, so the second sees the finished migration and skips it instead
  // of failing with "table models already exists".
  it('concurrent first open of a new folder succeeds', async () => {
    const schema = schemaOf(freshDir('schema-source'));
    const dir = freshDir('first-open-race');
    const other = migrateElsewhere(path.join(dir, 'studio.db'), schema, 300);
    try {
      await once(other, 'message');
      const store = openStore(dir);
      expect(store.pragma('user_version')).toBe(schema.version);
    } finally {
      await other.terminate();
    }
  });

  // A CLI command marks runs interrupted only when it holds studio.lock. Without the lock, a
  // `running` run may be training in the web bridge or another CLI that holds it, and marking it
  // interrupted would make it look dead and resumable.
  it('CLI context leaves a live run of another process running', async () => {
    const dir = freshDir('shared-list');
    const store = openStore(dir);
    const run = store.createRun(trainConfigFor(modelDir('llama-gqa-untied')));
    store.updateRunStatus(run.id, 'running', { startedAt: new Date().toISOString() });
    holdLock(dir);

    const context = openContext(dir, false);
    try {
      expect(context.store.getRun(run.id).status).toBe('running');
    } finally {
      await context.close();
    }
  });

  // The run keeps its live status, so `lora-studio runs delete RUN --yes` cannot remove the
  // history and folder of a run that another process is still training.
  it('CLI context cannot delete a live run of another process', async () => {
    const dir = freshDir('shared-delete');
    const store = openStore(dir);
    const run = store.createRun(trainConfigFor(modelDir('llama-gqa-untied')));
    store.updateRunStatus(run.id, 'running', { startedAt: new Date().toISOString() });
    holdLock(dir);

    const context = openContext(dir, false);
    try {
      const error = catchStudioError(() => context.store.deleteRun(run.id));
      expect(error.code).toBe('RUN_STATE');
    } finally {
      await context.close();
    }
  });
});

describe('worker reports', () => {
  // Step metrics wait in the MetricsBuffer (up to 50 rows or 1 s). resume() deletes metrics newer
  // than the checkpoint it picks, so when the process dies (SIGKILL, power loss) after a checkpoint
  // is stored but before the buffer is, the history would lack the steps before that checkpoint.
  // The buffer is written before each checkpoint is recorded.
  it('checkpoint is stored after the metrics before it', () => {
    const dir = freshDir('checkpoint-order');
    const store = openStore(dir);
    const transport = new ScriptedTransport();
    const jobs = new JobManager({ store, logger: silentLogger, createTransport: () => transport });
    const run = jobs.start(trainConfigFor(modelDir('llama-gqa-untied'), { maxSteps: 100 }));

    for (let step = 1; step <= 20; step++) transport.emit({ type: 'metrics', runId: run.id, metrics: metricsAt(step) });
    const checkpoint = path.join(run.runDir, 'checkpoints', 'step-000020');
    fs.mkdirSync(checkpoint, { recursive: true });
    transport.emit({ type: 'checkpoint', runId: run.id, step: 20, path: checkpoint });

    const observer = openStore(dir);
    expect(observer.listCheckpoints(run.id).map((artifact) => artifact.step)).toEqual([20]);
    expect(observer.getMetrics(run.id)).toHaveLength(20);
    transport.exit(0, null);
  });

  // A resumed worker first reports { totalSteps: 0, phase: 'loading' }. A resume that fails while
  // loading (its dataset was deleted, the model moved) must not leave the run at "step 158 of 0".
  it('loading progress keeps the known total steps', () => {
    const dir = freshDir('total-steps');
    const store = openStore(dir);
    const transport = new ScriptedTransport();
    const jobs = new JobManager({ store, logger: silentLogger, createTransport: () => transport });
    const run = jobs.start(trainConfigFor(modelDir('llama-gqa-untied'), { maxSteps: 3000 }));

    transport.emit({ type: 'progress', runId: run.id, progress: { step: 10, totalSteps: 3000, epoch: 0, phase: 'training' } });
    transport.emit({ type: 'progress', runId: run.id, progress: { step: 0, totalSteps: 0, epoch: 0, phase: 'loading' } });
    transport.exit(1, null);
    expect(store.getRun(run.id).totalSteps).toBe(3000);
  });

  it('worker killed without a result marks the run failed', () => {
    const dir = freshDir('killed');
    const store = openStore(dir);
    const transport = new ScriptedTransport();
    const jobs = new JobManager({ store, logger: silentLogger, createTransport: () => transport });
    const run = jobs.start(trainConfigFor(modelDir('llama-gqa-untied')));
    transport.emit({ type: 'metrics', runId: run.id, metrics: metricsAt(1) });
    transport.exit(null, 'SIGKILL');

    const stored = store.getRun(run.id);
    expect(stored.status).toBe('failed');
    expect(stored.error?.code).toBe('WORKER_EXITED');
    expect(stored.error?.message).toContain('SIGKILL');
    expect(store.getMetrics(run.id)).toHaveLength(1);
  });
});

describe('dataset removal', () => {
  it('dataset of a running run is kept', async () => {
    const dir = freshDir('dataset-running');
    const store = openStore(dir);
    const datasets = new DatasetService(dir, store);
    const dataset = await datasets.import(writeTokenRows(path.join(scratch, 'running-rows.jsonl'), 4, 8));
    const run = store.createRun(trainConfigFor(modelDir('llama-gqa-untied')), { datasetId: dataset.id });
    store.updateRunStatus(run.id, 'running');

    await expect(datasets.remove(dataset.id)).rejects.toMatchObject({ code: 'RUN_STATE' });
    expect(fs.existsSync(dataset.storedPath)).toBe(true);
  });

  // Resuming a cancelled, interrupted or failed run with a checkpoint reads its dataset again, so
  // removing that dataset would make the resume fail with ENOENT on .../datasets/<id>/data.jsonl.
  it('dataset of a resumable run is kept', async () => {
    const dir = freshDir('dataset-resumable');
    const store = openStore(dir);
    const datasets = new DatasetService(dir, store);
    const dataset = await datasets.import(writeTokenRows(path.join(scratch, 'resumable-rows.jsonl'), 4, 8));
    const run = store.createRun(trainConfigFor(modelDir('llama-gqa-untied')), { datasetId: dataset.id });
    const checkpoint = path.join(run.runDir, 'checkpoints', 'step-000010');
    fs.mkdirSync(checkpoint, { recursive: true });
    store.addArtifact({ runId: run.id, kind: 'checkpoint', path: checkpoint, step: 10 });
    store.updateRunStatus(run.id, 'cancelled');

    await expect(datasets.remove(dataset.id)).rejects.toMatchObject({ code: 'RUN_STATE' });
    expect(fs.existsSync(dataset.storedPath)).toBe(true);
  });
});
