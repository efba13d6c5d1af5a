/**
 * Batches one run's step metrics into few transactions: a worker can report hundreds of steps a
 * second, and one transaction per step would spend its time in fsync.
 */
import { StudioError } from '../../shared/errors';
import type { StepMetrics } from '../../shared/protocol';
import type { RunStore } from './index';

export interface MetricsBufferOptions {
  /** Flush as soon as this many rows are waiting. Default 50. */
  maxRows?: number;
  /** Flush rows that have waited this long. Default 1000 ms. */
  maxDelayMs?: number;
  /** Receives errors of timer-triggered flushes; their rows stay buffered for the next flush. */
  onError?: (error: unknown) => void;
}

export class MetricsBuffer {
  readonly runId: string;
  private readonly store: RunStore;
  private readonly maxRows: number;
  private readonly maxDelayMs: number;
  private readonly onError: (error: unknown) => void;
  private pending: StepMetrics[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(store: RunStore, runId: string, options: MetricsBufferOptions = {}) {
    this.store = store;
    this.runId = runId;
    this.maxRows = options.maxRows ?? 50;
    this.maxDelayMs = options.maxDelayMs ?? 1000;
    this.onError = options.onError ?? (() => {});
    if (!Number.isInteger(this.maxRows) || this.maxRows < 1) {
      throw new StudioError('INVALID_ARGUMENT', `Expected maxRows >= 1. Received: maxRows=${this.maxRows}.`);
    }
  }

  /** Number of rows waiting to be written. */
  get size(): number {
    return this.pending.length;
  }

  /**
   * Queues one row; writes the batch when it reaches maxRows. After close() rows are written at once.
   * Throws INVALID_ARGUMENT for a row without a non-negative integer step, before buffering it.
   */
  push(metrics: StepMetrics): void {
    if (!Number.isInteger(metrics?.step) || metrics.step < 0) {
      throw new StudioError(
        'INVALID_ARGUMENT',
        `Expected metrics.step to be an integer >= 0. Received: step=${String(metrics?.step)} for run "${this.runId}".`,
      );
    }
    this.pending.push(metrics);

    if (this.closed || this.pending.length >= this.maxRows) {
      this.flush();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.flushFromTimer(), this.maxDelayMs);
      // A pending flush must not keep a CLI process alive; close() writes the rest.
      this.timer.unref();
    }
  }

  /**
   * Writes the waiting rows in one transaction and returns how many were written.
   * On failure the rows stay buffered in order and the error is thrown. If the run no longer
   * exists (NOT_FOUND), the rows are dropped because no later flush could write them.
   */
  flush(): number {
    this.clearTimer();
    if (this.pending.length === 0) return 0;

    const batch = this.pending;
    this.pending = [];
    try {
      this.store.appendMetrics(this.runId, batch);
    } catch (error) {
      const runDeleted = error instanceof StudioError && error.code === 'NOT_FOUND';
      if (!runDeleted) this.pending = batch.concat(this.pending);
      throw error;
    }
    return batch.length;
  }

  /** Writes what is left and switches to writing each later row at once. */
  close(): number {
    this.closed = true;
    return this.flush();
  }

  private flushFromTimer(): void {
    this.timer = undefined;
    try {
      this.flush();
    } catch (error) {
      this.onError(error);
      if (!this.closed && this.pending.length > 0 && !this.timer) {
        this.timer = setTimeout(() => this.flushFromTimer(), this.maxDelayMs);
        this.timer.unref();
      }
    }
  }

  private clearTimer(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }
}
