import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StudioError } from '../../src/shared/errors';
import type { ParentMessage, StepMetrics } from '../../src/shared/protocol';
import type { RunRecord, RunStatus } from '../../src/shared/records';
import { DEFAULT_TRAIN_CONFIG, type TrainConfig } from '../../src/shared/train-config';
import { JobManager, silentLogger, type JobManagerOptions } from '../../src/services/jobs';
import { RunStore } from '../../src/services/store';
import { createChildProcessTransport } from '../../src/services/transport/child-process';

const FAKE_WORKER = fileURLToPath(new URL('../helpers/fake-worker.ts', import.meta.url));

// The fake worker's formulas (see test/helpers/fake-worker.ts).
const lossAt = (step: number) => 2 + 1 / step;
const valLossAt = (step: number) => 1 + 1 / step;

type Mode = 'complete' | 'crash' | 'hang' | 'error';

function makeConfig(overrides: Partial<TrainConfig> = {}): TrainConfig {
  return {
    ...DEFAULT_TRAIN_CONFIG,
    modelPath: '/models/fake',
    maxSteps: 6,
    saveSteps: 2,
    evalSteps: 3,
    ...overrides,
  };
}

let dir: string;
let store: RunStore;
let manager: JobManager | undefined;
/** Modes for the next workers, in fork order; an empty list forks `complete` workers. */
let modes: Array<{ mode: Mode; stepDelayMs?: number }>;

function createManager(options: Partial<JobManagerOptions> = {}): JobManager {
  manager = new JobManager({
    store,
    logger: silentLogger,
    createTransport: () => {
      const next = modes.shift() ?? { mode: 'complete' };
      return createChildProcessTransport(FAKE_WORKER, { args: [next.mode, String(next.stepDelayMs ?? 0)] });
    },
    ...options,
  });
  return manager;
}

/** Resolves with the run once it has one of `statuses` (now or after a later update). */
function waitForStatus(jobs: JobManager, runId: string, statuses: RunStatus[]): Promise<RunRecord> {
  return new Promise((resolvePromise) => {
    const current = store.getRun(runId);
    if (statuses.includes(current.status)) {
      resolvePromise(current);
      return;
    }
    const listener = (run: RunRecord) => {
      if (run.id !== runId || !statuses.includes(run.status)) return;
      jobs.off('run-updated', listener);
      resolvePromise(run);
    };
    jobs.on('run-updated', listener);
  });
}

/** Resolves once the run has reported `count` metrics events. */
function waitForMetrics(jobs: JobManager, runId: string, count: number): Promise<StepMetrics[]> {
  const seen: StepMetrics[] = [];
  return new Promise((resolvePromise) => {
    const listener = (id: string, metrics: StepMetrics) => {
      if (id !== runId) return;
      seen.push(metrics);
      if (seen.length === count) {
        jobs.off('metrics', listener);
        resolvePromise(seen);
      }
    };
    jobs.on('metrics', listener);
  });
}

function readStartMessages(run: RunRecord): Array<Extract<ParentMessage, { type: 'start' }>> {
  return readFileSync(join(run.runDir, 'start-messages.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line));
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'studio-jobs-'));
  store = RunStore.open(dir);
  modes = [];
});

afterEach(async () => {
  await manager?.shutdown();
  manager = undefined;
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('JobManager', () => {
  it('completed run stores metrics and adapter', async () => {
    const jobs = createManager();
    const metricEvents: number[] = [];
    jobs.on('metrics', (_id, metrics) => metricEvents.push(metrics.step));

    const started = jobs.start(makeConfig(), { name: 'fake run' });
    expect(started.status).toBe('running');
    expect(jobs.workerPid(started.id)).toBeGreaterThan(0);

    const done = await waitForStatus(jobs, started.id, ['completed', 'failed']);
    await jobs.whenStopped(started.id);

    expect(done.status).toBe('completed');
    expect(done.error).toBeNull();
    expect(done.steps).toBe(6);
    expect(done.totalSteps).toBe(6);
    expect(done.finalLoss).toBe(lossAt(6));
    expect(done.bestValLoss).toBe(valLossAt(6));
    expect(done.startedAt).not.toBeNull();
    expect(done.finishedAt).not.toBeNull();
    expect(metricEvents).toEqual([1, 2, 3, 4, 5, 6]);

    const metrics = store.getMetrics(started.id);
    expect(metrics.map((row) => row.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(metrics[3].loss).toBe(lossAt(4));
    expect(metrics[2].valLoss).toBe(valLossAt(3));
    expect(metrics[3].valLoss).toBeUndefined();

    const adapters = store.listArtifacts(started.id, 'adapter');
    expect(adapters).toHaveLength(1);
    expect(adapters[0].path).toBe(join(started.runDir, 'adapter'));
    expect(adapters[0].step).toBe(6);
    expect(adapters[0].sizeBytes).toBeGreaterThan(256);
    expect(store.listCheckpoints(started.id).map((artifact) => artifact.step)).toEqual([6, 4, 2]);

    const messages = store.listEvents(started.id).map((event) => event.message);
    expect(messages).toContain('fake worker started at step 0');
    expect(messages.at(-1)).toBe(`Run completed after 6 steps, final loss ${lossAt(6).toFixed(4)} on backend fake.`);
    expect(jobs.liveRunIds()).toEqual([]);
  });

  it('creates runDir with checkpoints and exports', async () => {
    const jobs = createManager();
    const run = jobs.start(makeConfig({ maxSteps: 1 }));
    await waitForStatus(jobs, run.id, ['completed', 'failed']);

    expect(run.runDir).toBe(join(dir, 'runs', run.id));
    expect(readStartMessages(run)).toHaveLength(1);
    for (const folder of ['checkpoints', 'exports']) {
      expect(statSync(join(run.runDir, folder)).isDirectory(), folder).toBe(true);
    }
  });

  it('SIGKILL marks run failed, next run completes', async () => {
    const jobs = createManager();
    modes.push({ mode: 'hang' });

    const run = jobs.start(makeConfig());
    await waitForMetrics(jobs, run.id, 3);
    const pid = jobs.workerPid(run.id)!;
    process.kill(pid, 'SIGKILL');

    const failed = await waitForStatus(jobs, run.id, ['failed', 'completed', 'cancelled']);
    expect(failed.status).toBe('failed');
    expect(failed.error?.code).toBe('WORKER_EXITED');
    expect(failed.error?.message).toBe(
      `The training worker of run "${run.id}" was killed by signal SIGKILL before it reported a result.`,
    );
    expect(failed.error?.hint).toContain('out of memory');
    // Metrics reported before the kill are written when the worker exits.
    expect(store.getMetrics(run.id).map((row) => row.step)).toEqual([1, 2, 3]);
    expect(failed.finishedAt).not.toBeNull();

    const next = jobs.start(makeConfig());
    const completed = await waitForStatus(jobs, next.id, ['completed', 'failed']);
    expect(completed.status).toBe('completed');
    expect(store.getMetrics(next.id)).toHaveLength(6);
  });

  it('crash exit code marks run failed', async () => {
    const jobs = createManager();
    modes.push({ mode: 'crash' });

    const run = jobs.start(makeConfig());
    const failed = await waitForStatus(jobs, run.id, ['failed', 'completed']);

    expect(failed.status).toBe('failed');
    expect(failed.error?.code).toBe('WORKER_EXITED');
    expect(failed.error?.message).toContain('exited with code 3');
    expect(store.getMetrics(run.id).map((row) => row.step)).toEqual([1, 2]);
  });

  it('worker error marks run failed with payload', async () => {
    const jobs = createManager();
    modes.push({ mode: 'error' });

    const run = jobs.start(makeConfig());
    const failed = await waitForStatus(jobs, run.id, ['failed', 'completed']);
    await jobs.whenStopped(run.id);

    expect(failed.status).toBe('failed');
    expect(failed.error).toEqual({
      code: 'NAN_LOSS',
      message: 'Loss became NaN at step 3.',
      hint: 'Lower learningRate.',
    });
    // The exit with code 1 after the error message does not overwrite the reported error.
    expect(store.getRun(run.id).error?.code).toBe('NAN_LOSS');
    expect(store.getMetrics(run.id).map((row) => row.step)).toEqual([1, 2]);
    const errors = store.listEvents(run.id).filter((event) => event.level === 'error');
    expect(errors.map((event) => event.message)).toEqual(['NAN_LOSS: Loss became NaN at step 3. Lower learningRate.']);
  });

  it('concurrency 1 runs queued jobs in order', async () => {
    const jobs = createManager({ concurrency: 1 });
    // run-updated also fires for other changes (totalSteps), so only status changes are recorded.
    const transitions: string[] = [];
    const lastStatus = new Map<string, RunStatus>();
    jobs.on('run-updated', (run) => {
      if (lastStatus.get(run.id) === run.status) return;
      lastStatus.set(run.id, run.status);
      transitions.push(`${run.name}:${run.status}`);
    });
    modes.push({ mode: 'complete', stepDelayMs: 5 }, { mode: 'complete', stepDelayMs: 5 });

    const first = jobs.start(makeConfig(), { name: 'first' });
    const second = jobs.start(makeConfig(), { name: 'second' });

    expect(first.status).toBe('running');
    expect(second.status).toBe('queued');
    expect(jobs.queuedRunIds()).toEqual([second.id]);
    expect(jobs.liveRunIds()).toEqual([first.id]);

    await waitForStatus(jobs, second.id, ['completed', 'failed']);
    expect(transitions).toEqual([
      'first:queued',
      'first:running',
      'second:queued',
      'first:completed',
      'second:running',
      'second:completed',
    ]);
    expect(store.getRun(first.id).status).toBe('completed');
  });

  it('cancel stops a running worker', async () => {
    const jobs = createManager();
    modes.push({ mode: 'complete', stepDelayMs: 20 });

    const run = jobs.start(makeConfig({ maxSteps: 10_000 }));
    await waitForMetrics(jobs, run.id, 2);
    jobs.cancel(run.id);
    const cancelled = await waitForStatus(jobs, run.id, ['cancelled', 'completed', 'failed']);
    await jobs.whenStopped(run.id);

    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.error).toBeNull();
    expect(cancelled.steps).toBeLessThan(10_000);
    expect(cancelled.steps).toBeGreaterThanOrEqual(2);
    const [latest] = store.listCheckpoints(run.id);
    expect(latest.step).toBe(cancelled.steps);
    expect(latest.path).toBe(join(run.runDir, 'checkpoints', `step-${cancelled.steps}`));
  });

  it('cancel kills a worker that does not stop', async () => {
    const jobs = createManager({ stopTimeoutMs: 200 });
    modes.push({ mode: 'hang' });

    const run = jobs.start(makeConfig());
    await waitForMetrics(jobs, run.id, 3);
    jobs.cancel(run.id);
    const cancelled = await waitForStatus(jobs, run.id, ['cancelled', 'failed']);

    expect(cancelled.status).toBe('cancelled');
    const warnings = store.listEvents(run.id).filter((event) => event.level === 'warn');
    expect(warnings.map((event) => event.message)).toEqual([
      'The worker exited (signal SIGKILL) before it confirmed the cancel.',
    ]);
  });

  it('cancel of a queued run removes it', async () => {
    const jobs = createManager();
    modes.push({ mode: 'complete', stepDelayMs: 5 });

    const first = jobs.start(makeConfig());
    const second = jobs.start(makeConfig());
    const cancelled = jobs.cancel(second.id);

    expect(cancelled.status).toBe('cancelled');
    expect(jobs.queuedRunIds()).toEqual([]);
    await waitForStatus(jobs, first.id, ['completed', 'failed']);
    expect(store.getRun(second.id).status).toBe('cancelled');
    expect(store.getRun(second.id).startedAt).toBeNull();
  });

  it('pause and resume a live run', async () => {
    const jobs = createManager();
    modes.push({ mode: 'complete', stepDelayMs: 20 });

    const run = jobs.start(makeConfig({ maxSteps: 10_000, saveSteps: 0 }));
    await waitForMetrics(jobs, run.id, 2);
    jobs.pause(run.id);
    const paused = await waitForStatus(jobs, run.id, ['paused', 'failed']);

    expect(paused.status).toBe('paused');
    const [checkpoint] = store.listCheckpoints(run.id);
    expect(checkpoint.path).toContain(join(run.runDir, 'checkpoints', 'step-'));
    expect(() => jobs.pause(run.id)).toThrow(StudioError);

    jobs.resume(run.id);
    const resumed = await waitForStatus(jobs, run.id, ['running', 'failed']);
    expect(resumed.status).toBe('running');
    expect(jobs.liveRunIds()).toEqual([run.id]);
  });

  it('resume of interrupted run uses latest checkpoint', async () => {
    const run = store.createRun(makeConfig({ maxSteps: 6 }));
    store.updateRunStatus(run.id, 'running', { startedAt: new Date().toISOString() });
    for (const step of [2, 4]) {
      const path = join(run.runDir, 'checkpoints', `step-${step}`);
      mkdirSync(path, { recursive: true });
      writeFileSync(join(path, 'state.json'), JSON.stringify({ step }));
      store.addArtifact({ runId: run.id, kind: 'checkpoint', path, step });
    }
    // A checkpoint whose folder is gone is skipped.
    store.addArtifact({ runId: run.id, kind: 'checkpoint', path: join(run.runDir, 'checkpoints', 'step-5'), step: 5 });
    const stale: StepMetrics[] = [1, 2, 3, 4, 5].map((step) => ({
      step,
      epoch: 0,
      loss: 99,
      lr: 1e-4,
      gradNorm: 1,
      tokensPerSecond: 1,
      memoryBytes: 1,
      timeMs: 1,
    }));
    store.appendMetrics(run.id, stale);
    const [interrupted] = store.markInterruptedOnStartup();
    expect(interrupted.status).toBe('interrupted');

    const jobs = createManager();
    const resumed = jobs.resume(run.id);
    expect(resumed.status).toBe('running');
    const done = await waitForStatus(jobs, run.id, ['completed', 'failed']);

    expect(done.status).toBe('completed');
    const [start] = readStartMessages(run);
    expect(start.resumeFrom).toBe(join(run.runDir, 'checkpoints', 'step-4'));
    expect(start.runId).toBe(run.id);
    const metrics = store.getMetrics(run.id);
    expect(metrics.map((row) => row.step)).toEqual([1, 2, 3, 4, 5, 6]);
    // Steps up to the checkpoint are kept; later ones come from the resumed worker.
    expect(metrics[3].loss).toBe(99);
    expect(metrics[4].loss).toBe(lossAt(5));
    expect(done.finalLoss).toBe(lossAt(6));
  });

  it('resume without checkpoint raises RUN_STATE', () => {
    const jobs = createManager();
    const run = store.createRun(makeConfig());
    store.updateRunStatus(run.id, 'failed');

    let error: unknown;
    try {
      jobs.resume(run.id);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(StudioError);
    expect((error as StudioError).code).toBe('RUN_STATE');
    expect((error as StudioError).message).toBe(`Run "${run.id}" has no checkpoint on disk to resume from.`);
    expect(store.getRun(run.id).status).toBe('failed');
  });

  it('resume of a completed run raises RUN_STATE', () => {
    const jobs = createManager();
    const run = store.createRun(makeConfig());
    store.updateRunStatus(run.id, 'completed');

    expect(() => jobs.resume(run.id)).toThrow(`Run "${run.id}" is completed, so it cannot be resumed.`);
    expect(() => jobs.cancel(run.id)).toThrow(StudioError);
    expect(() => jobs.pause('run-missing')).toThrow('Run "run-missing" was not found.');
  });

  it('shutdown cancels live and queued runs', async () => {
    const jobs = createManager();
    modes.push({ mode: 'complete', stepDelayMs: 20 });

    const live = jobs.start(makeConfig({ maxSteps: 10_000 }));
    const queued = jobs.start(makeConfig());
    await waitForMetrics(jobs, live.id, 1);
    await jobs.shutdown();

    expect(store.getRun(live.id).status).toBe('cancelled');
    expect(store.getRun(queued.id).status).toBe('cancelled');
    expect(jobs.liveRunIds()).toEqual([]);
    expect(() => jobs.start(makeConfig())).toThrow('The job manager has shut down, so no run can start.');
  });
});
