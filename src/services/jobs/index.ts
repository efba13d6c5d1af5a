/**
 * The job manager: queues training runs, starts one worker process per run, persists what the
 * worker reports, and marks a run failed when its worker dies without reporting a result.
 *
 * Lifecycle of a run here: `queued` → `running` ⇄ `paused` → `completed` | `cancelled` | `failed`.
 * A `failed`, `cancelled` or `interrupted` run with a checkpoint can be queued again by resume().
 */
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { StudioError, formatError, isErrorPayload, toErrorPayload, type ErrorPayload } from '../../shared/errors';
import type {
  LogLevel,
  ProgressInfo,
  RunResult,
  StepMetrics,
  WorkerMessage,
  WorkerTransport,
} from '../../shared/protocol';
import type { ArtifactKind, ArtifactRecord, RunRecord, RunStatus } from '../../shared/records';
import type { TrainConfig } from '../../shared/train-config';
import { MetricsBuffer, type CreateRunOptions, type MetricsBufferOptions, type RunStore } from '../store';
import { createStderrLogger, type Logger } from './logger';

export { createStderrLogger, silentLogger, type Logger } from './logger';

/** One line of a run's log as the UI receives it; `id` is set when the line was stored. */
export interface RunLogLine {
  id?: number;
  runId: string;
  time: string;
  level: LogLevel;
  message: string;
}

export interface JobManagerEvents {
  /** A run's status, timestamps, error or totals changed. */
  'run-updated': [run: RunRecord];
  metrics: [runId: string, metrics: StepMetrics];
  progress: [runId: string, progress: ProgressInfo];
  log: [line: RunLogLine];
  artifact: [artifact: ArtifactRecord];
}

export interface JobManagerOptions {
  store: RunStore;
  /** Starts one worker process; called once per run start or resume. */
  createTransport: () => WorkerTransport;
  /** Number of runs that train at the same time; further runs wait `queued`. Default 1. */
  concurrency?: number;
  logger?: Logger;
  /** Batching of step metrics before they are written. */
  metrics?: Pick<MetricsBufferOptions, 'maxRows' | 'maxDelayMs'>;
  /**
   * How long a worker may take to exit after it was cancelled or reported its result, before it
   * is killed with SIGKILL. Default 30000 ms.
   */
  stopTimeoutMs?: number;
}

interface QueueEntry {
  runId: string;
  resumeFrom?: string;
}

/** A worker process and the state the manager keeps for it. */
interface LiveWorker {
  runId: string;
  runDir: string;
  transport: WorkerTransport;
  buffer: MetricsBuffer;
  /** The worker reported `done` or `error`, so its exit is expected. */
  settled: boolean;
  /** cancel() or shutdown() asked the worker to stop. */
  stopRequested: boolean;
  /** Highest step the worker reported, for checkpoints reported without a step. */
  lastStep: number | null;
  totalSteps: number | null;
  killTimer?: NodeJS.Timeout;
  exited: Promise<void>;
  markExited: () => void;
}

/** Statuses from which resume() starts a new worker from the latest checkpoint. */
const RESUMABLE_STATUSES: readonly RunStatus[] = ['interrupted', 'failed', 'cancelled'];

const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/** Worker log lines longer than this are cut before they are stored. */
const MAX_LOG_MESSAGE_LENGTH = 10_000;

function now(): string {
  return new Date().toISOString();
}

/** Returns the size of a file, or of all files under a folder; null when it cannot be read. */
function measurePath(path: string): number | null {
  try {
    const stats = statSync(path);
    if (!stats.isDirectory()) return stats.size;
    let total = 0;
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const size = measurePath(join(path, entry.name));
      if (size !== null) total += size;
    }
    return total;
  } catch {
    return null;
  }
}

function workerExitedError(runId: string, code: number | null, signal: string | null): ErrorPayload {
  let how: string;
  if (signal !== null) how = `was killed by signal ${signal}`;
  else if (code !== null) how = `exited with code ${code}`;
  else how = 'failed to start';

  const resumeHint = 'Resume the run to continue from its latest checkpoint, if it saved one.';
  const hint =
    signal === 'SIGKILL'
      ? `The system may have run out of memory: lower batchSize or maxSeqLength, or use QLoRA. ${resumeHint}`
      : `The run log shows the worker's last messages. ${resumeHint}`;
  return {
    code: 'WORKER_EXITED',
    message: `The training worker of run "${runId}" ${how} before it reported a result.`,
    hint,
  };
}

function runStateError(runId: string, status: RunStatus, action: string, hint?: string): StudioError {
  return new StudioError('RUN_STATE', `Run "${runId}" is ${status}, so it cannot be ${action}.`, hint);
}

export class JobManager extends EventEmitter<JobManagerEvents> {
  private readonly store: RunStore;
  private readonly createTransport: () => WorkerTransport;
  private readonly concurrency: number;
  private readonly logger: Logger;
  private readonly metricsOptions: Pick<MetricsBufferOptions, 'maxRows' | 'maxDelayMs'>;
  private readonly stopTimeoutMs: number;
  private readonly queue: QueueEntry[] = [];
  private readonly live = new Map<string, LiveWorker>();
  private closed = false;

  constructor(options: JobManagerOptions) {
    super();
    const concurrency = options.concurrency ?? 1;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new StudioError(
        'INVALID_ARGUMENT',
        `Expected concurrency to be an integer >= 1. Received: concurrency=${String(concurrency)}.`,
      );
    }
    this.store = options.store;
    this.createTransport = options.createTransport;
    this.concurrency = concurrency;
    this.logger = options.logger ?? createStderrLogger('jobs');
    this.metricsOptions = options.metrics ?? {};
    this.stopTimeoutMs = options.stopTimeoutMs ?? 30_000;
  }

  /**
   * Creates a run, its folders `checkpoints/` and `exports/`, and queues it. The run starts at once
   * when fewer than `concurrency` runs are live. Returns the run as stored after that step.
   */
  start(config: TrainConfig, options: CreateRunOptions = {}): RunRecord {
    if (this.closed) {
      throw new StudioError('RUN_STATE', 'The job manager has shut down, so no run can start.', 'Restart the app.');
    }

    const run = this.store.createRun(config, options);
    this.prepareRunDir(run);
    this.emit('run-updated', run);

    this.queue.push({ runId: run.id });
    this.logger.info(`Queued run ${run.id} (${run.method}, model ${run.modelPath})`);
    this.pump();
    return this.store.getRun(run.id);
  }

  /** Asks the worker of a running run to pause; the run becomes `paused` when the worker confirms. */
  pause(runId: string): RunRecord {
    const run = this.store.getRun(runId);
    const worker = this.live.get(runId);
    if (!worker || worker.settled || run.status !== 'running') {
      throw runStateError(runId, run.status, 'paused', 'Only a running run can be paused.');
    }

    worker.transport.send({ type: 'pause' });
    this.logger.info(`Pausing run ${runId}`);
    return run;
  }

  /**
   * Continues a run. A paused live run gets a `resume` message. An interrupted, failed or cancelled
   * run is queued again, and its new worker starts from the latest checkpoint that still exists on
   * disk. Metrics after that checkpoint's step are deleted because the worker computes them again.
   */
  resume(runId: string): RunRecord {
    const run = this.store.getRun(runId);
    const worker = this.live.get(runId);

    if (worker && !worker.settled) {
      if (run.status !== 'paused') {
        throw runStateError(runId, run.status, 'resumed', 'Only a paused or stopped run can be resumed.');
      }
      worker.transport.send({ type: 'resume' });
      this.logger.info(`Resuming paused run ${runId}`);
      return run;
    }

    if (this.closed) {
      throw new StudioError('RUN_STATE', 'The job manager has shut down, so no run can resume.', 'Restart the app.');
    }
    if (!RESUMABLE_STATUSES.includes(run.status)) {
      throw runStateError(runId, run.status, 'resumed', 'Only a paused, interrupted, failed or cancelled run can be resumed.');
    }

    const checkpoint = this.store.listCheckpoints(runId).find((artifact) => existsSync(artifact.path));
    if (!checkpoint) {
      throw new StudioError(
        'RUN_STATE',
        `Run "${runId}" has no checkpoint on disk to resume from.`,
        'Start a new run with the same settings. A lower saveSteps writes checkpoints more often.',
      );
    }

    this.prepareRunDir(run);
    if (checkpoint.step !== null) this.store.deleteMetricsAfter(runId, checkpoint.step);
    const queued = this.store.updateRunStatus(runId, 'queued', { error: null, finishedAt: null });
    this.addLog(runId, 'info', `Resuming from checkpoint ${checkpoint.path} (step ${checkpoint.step ?? 'unknown'}).`);
    this.emit('run-updated', queued);

    this.queue.push({ runId, resumeFrom: checkpoint.path });
    this.logger.info(`Queued run ${runId} to resume from ${checkpoint.path}`);
    this.pump();
    return this.store.getRun(runId);
  }

  /**
   * Cancels a run. A queued or interrupted run becomes `cancelled` at once. A live worker gets a
   * `cancel` message, then saves a checkpoint and reports `done` with status cancelled. If it has
   * not exited after `stopTimeoutMs`, it is killed and the run still becomes `cancelled`.
   */
  cancel(runId: string): RunRecord {
    const run = this.store.getRun(runId);
    const worker = this.live.get(runId);

    if (worker && !worker.settled) {
      if (!worker.stopRequested) {
        worker.stopRequested = true;
        worker.transport.send({ type: 'cancel' });
        this.scheduleKill(worker);
        this.logger.info(`Cancelling run ${runId}`);
      }
      return run;
    }

    const queueIndex = this.queue.findIndex((entry) => entry.runId === runId);
    if (queueIndex >= 0 || run.status === 'queued' || run.status === 'interrupted') {
      if (queueIndex >= 0) this.queue.splice(queueIndex, 1);
      const cancelled = this.store.updateRunStatus(runId, 'cancelled', { finishedAt: now() });
      this.addLog(runId, 'info', `Cancelled while ${run.status}.`);
      this.logger.info(`Cancelled ${run.status} run ${runId}`);
      this.emit('run-updated', cancelled);
      return cancelled;
    }

    throw runStateError(runId, run.status, 'cancelled', 'Only a queued, running, paused or interrupted run can be cancelled.');
  }

  /** Resolves with the run once no worker of it is alive (at once when none is). */
  async whenStopped(runId: string): Promise<RunRecord> {
    const worker = this.live.get(runId);
    if (worker) await worker.exited;
    return this.store.getRun(runId);
  }

  /** Returns the process id of the run's live worker, or undefined. */
  workerPid(runId: string): number | undefined {
    return this.live.get(runId)?.transport.pid;
  }

  /** Ids of the runs that have a live worker. */
  liveRunIds(): string[] {
    return [...this.live.keys()];
  }

  /** Ids of the runs waiting for a free slot, in start order. */
  queuedRunIds(): string[] {
    return this.queue.map((entry) => entry.runId);
  }

  /**
   * Cancels queued runs, sends `cancel` to every live worker, and resolves once all have exited
   * and their metrics are written. Later start() and resume() calls are rejected.
   */
  async shutdown(): Promise<void> {
    this.closed = true;

    for (const entry of this.queue.splice(0)) {
      const cancelled = this.store.updateRunStatus(entry.runId, 'cancelled', { finishedAt: now() });
      this.addLog(entry.runId, 'info', 'Cancelled: the app shut down before the run started.');
      this.emit('run-updated', cancelled);
    }

    const workers = [...this.live.values()];
    for (const worker of workers) {
      if (worker.settled || worker.stopRequested) {
        this.scheduleKill(worker);
        continue;
      }
      worker.stopRequested = true;
      worker.transport.send({ type: 'cancel' });
      this.scheduleKill(worker);
    }
    await Promise.all(workers.map((worker) => worker.exited));
    this.logger.info(`Job manager shut down; stopped ${workers.length} worker(s)`);
  }

  // Starting workers

  private pump(): void {
    while (!this.closed && this.live.size < this.concurrency && this.queue.length > 0) {
      const entry = this.queue.shift()!;
      try {
        this.launch(entry);
      } catch (error) {
        // pump() also runs from worker exit handlers, where a throw would end the process.
        this.logger.error(`Failed to start run ${entry.runId}`, error);
      }
    }
  }

  private launch(entry: QueueEntry): void {
    const { runId, resumeFrom } = entry;
    const run = this.store.findRun(runId);
    // The run may have been cancelled or deleted while it waited.
    if (!run || run.status !== 'queued') return;

    let transport: WorkerTransport;
    try {
      transport = this.createTransport();
    } catch (error) {
      const reason = toErrorPayload(error).message;
      this.logger.error(`Failed to start the worker of run ${runId}: ${reason}`);
      this.markFailed(runId, {
        code: 'WORKER_EXITED',
        message: `The training worker of run "${runId}" failed to start: ${reason}`,
        hint: 'Check that the app is installed completely, then resume or start the run again.',
      });
      return;
    }

    let markExited: () => void = () => {};
    const exited = new Promise<void>((resolvePromise) => {
      markExited = resolvePromise;
    });
    const worker: LiveWorker = {
      runId,
      runDir: run.runDir,
      transport,
      buffer: new MetricsBuffer(this.store, runId, {
        ...this.metricsOptions,
        onError: (error) => this.logger.error(`Failed to write metrics of run ${runId}`, error),
      }),
      settled: false,
      stopRequested: false,
      lastStep: run.steps > 0 ? run.steps : null,
      totalSteps: run.totalSteps,
      exited,
      markExited,
    };
    this.live.set(runId, worker);
    transport.onMessage((message) => this.handleMessage(worker, message));
    transport.onExit((code, signal) => this.handleExit(worker, code, signal));

    const running = this.store.updateRunStatus(runId, 'running', {
      startedAt: run.startedAt ?? now(),
      finishedAt: null,
      error: null,
    });
    transport.send({ type: 'start', runId, config: run.config, runDir: run.runDir, resumeFrom });

    const from = resumeFrom ? `, resuming from ${resumeFrom}` : '';
    this.addLog(runId, 'info', `Started worker (pid ${transport.pid ?? 'unknown'})${from}.`);
    this.logger.info(`Started run ${runId} (worker pid ${transport.pid ?? 'unknown'}${from})`);
    this.emit('run-updated', running);
  }

  private prepareRunDir(run: RunRecord): void {
    try {
      mkdirSync(join(run.runDir, 'checkpoints'), { recursive: true });
      mkdirSync(join(run.runDir, 'exports'), { recursive: true });
    } catch (error) {
      const payload: ErrorPayload = {
        code: 'INTERNAL',
        message: `Failed to create the run folder ${run.runDir}: ${toErrorPayload(error).message}`,
        hint: 'Check that the app data folder is writable and the disk has free space.',
      };
      this.logger.error(`Run ${run.id}: ${formatError(payload)}`);
      this.markFailed(run.id, payload);
      throw new StudioError(payload.code, payload.message, payload.hint);
    }
  }

  // Worker messages

  private handleMessage(worker: LiveWorker, message: WorkerMessage): void {
    try {
      this.routeMessage(worker, message);
    } catch (error) {
      this.logger.error(
        `Failed to handle "${String(message?.type)}" from the worker of run ${worker.runId}`,
        error,
      );
    }
  }

  private routeMessage(worker: LiveWorker, message: WorkerMessage): void {
    const { runId } = worker;
    if ('runId' in message && message.runId !== runId) {
      this.logger.warn(`Ignored "${message.type}" for run ${message.runId} from the worker of run ${runId}`);
      return;
    }

    switch (message.type) {
      case 'ready':
        this.logger.debug(`Worker of run ${runId} is ready (pid ${message.pid})`);
        return;
      case 'progress':
        this.handleProgress(worker, message.progress);
        return;
      case 'metrics':
        worker.buffer.push(message.metrics);
        worker.lastStep = Math.max(worker.lastStep ?? 0, message.metrics.step);
        this.emit('metrics', runId, message.metrics);
        return;
      case 'log':
        this.addLog(runId, message.level, message.message);
        return;
      case 'checkpoint':
        // Resume deletes metrics newer than its checkpoint, so the rows up to the checkpoint must
        // be stored before the checkpoint is, or a crash in between leaves a gap in the history.
        this.writeBufferedMetrics(worker);
        this.recordArtifact(worker, 'checkpoint', message.path, message.step);
        return;
      case 'paused':
        this.handlePaused(worker, message.step, message.checkpoint);
        return;
      case 'resumed':
        this.setStatus(worker, 'running');
        this.logger.info(`Resumed run ${runId} at step ${message.step}`);
        return;
      case 'done':
        this.handleDone(worker, message.result);
        return;
      case 'error':
        this.handleWorkerError(worker, message.error, message.checkpoint);
        return;
      default:
        this.logger.warn(`Ignored unknown message from the worker of run ${runId}`, message);
    }
  }

  private handleProgress(worker: LiveWorker, progress: ProgressInfo): void {
    worker.lastStep = Math.max(worker.lastStep ?? 0, progress.step);
    // A resumed worker reports 0 total steps while it loads; keep the total already known.
    if (Number.isInteger(progress.totalSteps) && progress.totalSteps > 0 && progress.totalSteps !== worker.totalSteps) {
      worker.totalSteps = progress.totalSteps;
      this.emit('run-updated', this.store.setTotalSteps(worker.runId, progress.totalSteps));
    }
    this.emit('progress', worker.runId, progress);
  }

  private handlePaused(worker: LiveWorker, step: number, checkpoint: string | undefined): void {
    this.flushMetrics(worker);
    if (checkpoint) this.recordArtifact(worker, 'checkpoint', checkpoint, step);
    this.setStatus(worker, 'paused');
    this.addLog(worker.runId, 'info', `Paused at step ${step}.`);
    this.logger.info(`Paused run ${worker.runId} at step ${step}`);
  }

  private handleDone(worker: LiveWorker, result: RunResult): void {
    const { runId } = worker;
    worker.settled = true;
    this.flushMetrics(worker);

    if (result.checkpoint) this.recordArtifact(worker, 'checkpoint', result.checkpoint, result.steps);
    if (result.adapterPath) this.recordArtifact(worker, 'adapter', result.adapterPath, result.steps);
    this.store.setRunSummary(runId, {
      steps: result.steps,
      ...(result.finalLoss !== undefined ? { finalLoss: result.finalLoss } : {}),
      ...(result.bestValLoss !== undefined ? { bestValLoss: result.bestValLoss } : {}),
    });

    const status: RunStatus = result.status === 'cancelled' ? 'cancelled' : 'completed';
    const updated = this.store.updateRunStatus(runId, status, { finishedAt: now(), error: null });
    const loss = result.finalLoss !== undefined ? `, final loss ${result.finalLoss.toFixed(4)}` : '';
    this.addLog(runId, 'info', `Run ${status} after ${result.steps} steps${loss} on backend ${result.backend}.`);
    this.logger.info(`Run ${runId} ${status} after ${result.steps} steps`);
    this.emit('run-updated', updated);
    this.scheduleKill(worker);
  }

  private handleWorkerError(worker: LiveWorker, error: unknown, checkpoint: string | undefined): void {
    worker.settled = true;
    this.flushMetrics(worker);

    if (checkpoint) this.recordArtifact(worker, 'checkpoint', checkpoint, worker.lastStep);
    const payload = isErrorPayload(error) ? error : toErrorPayload(error);
    this.markFailed(worker.runId, payload);
    this.scheduleKill(worker);
  }

  private handleExit(worker: LiveWorker, code: number | null, signal: string | null): void {
    const { runId } = worker;
    clearTimeout(worker.killTimer);
    if (this.live.get(runId) === worker) this.live.delete(runId);

    try {
      this.flushMetrics(worker);
      if (!worker.settled) {
        worker.settled = true;
        if (worker.stopRequested) {
          const how = signal !== null ? `signal ${signal}` : `code ${code}`;
          this.logger.warn(`Worker of run ${runId} exited (${how}) before it confirmed the cancel`);
          this.addLog(runId, 'warn', `The worker exited (${how}) before it confirmed the cancel.`);
          this.emit('run-updated', this.store.updateRunStatus(runId, 'cancelled', { finishedAt: now() }));
        } else {
          const payload = workerExitedError(runId, code, signal);
          this.logger.error(`Run ${runId}: ${formatError(payload)}`);
          this.markFailed(runId, payload);
        }
      } else {
        this.logger.debug(`Worker of run ${runId} exited (code ${code}, signal ${signal})`);
      }
    } catch (error) {
      this.logger.error(`Failed to record the exit of the worker of run ${runId}`, error);
    } finally {
      worker.markExited();
      this.pump();
    }
  }

  // Persistence helpers

  /** Writes the buffered metrics now and keeps buffering later rows. */
  private writeBufferedMetrics(worker: LiveWorker): void {
    try {
      worker.buffer.flush();
    } catch (error) {
      this.logger.error(`Failed to write metrics of run ${worker.runId}`, error);
    }
  }

  private flushMetrics(worker: LiveWorker): void {
    try {
      worker.buffer.close();
    } catch (error) {
      this.logger.error(`Failed to write metrics of run ${worker.runId}`, error);
    }
  }

  private setStatus(worker: LiveWorker, status: RunStatus): void {
    this.emit('run-updated', this.store.updateRunStatus(worker.runId, status));
  }

  private markFailed(runId: string, payload: ErrorPayload): void {
    const failed = this.store.updateRunStatus(runId, 'failed', { error: payload, finishedAt: now() });
    this.addLog(runId, 'error', formatError(payload));
    this.logger.error(`Run ${runId} failed: ${formatError(payload)}`);
    this.emit('run-updated', failed);
  }

  /** Records a worker-reported path; a relative path is taken relative to the run folder. */
  private recordArtifact(worker: LiveWorker, kind: ArtifactKind, path: string, step: number | null): void {
    const absolute = resolve(worker.runDir, path);
    const artifact = this.store.addArtifact({
      runId: worker.runId,
      kind,
      path: absolute,
      step: step !== null && Number.isInteger(step) ? step : null,
      sizeBytes: measurePath(absolute),
    });
    this.emit('artifact', artifact);
  }

  /**
   * Stores a log line (debug lines are only emitted, because workers may send one per step) and
   * emits it.
   */
  private addLog(runId: string, level: LogLevel, message: string): void {
    const safeLevel: LogLevel = LOG_LEVELS.includes(level) ? level : 'info';
    const text = String(message);
    const cut = text.length > MAX_LOG_MESSAGE_LENGTH ? `${text.slice(0, MAX_LOG_MESSAGE_LENGTH)}…` : text;

    if (safeLevel === 'debug') {
      this.emit('log', { runId, time: now(), level: safeLevel, message: cut });
      return;
    }
    const event = this.store.addEvent(runId, safeLevel, cut);
    this.emit('log', event);
  }

  private scheduleKill(worker: LiveWorker): void {
    if (worker.killTimer) return;
    worker.killTimer = setTimeout(() => {
      this.logger.warn(`Worker of run ${worker.runId} did not exit within ${this.stopTimeoutMs} ms; killing it`);
      worker.transport.kill('SIGKILL');
    }, this.stopTimeoutMs);
    worker.killTimer.unref();
  }
}
