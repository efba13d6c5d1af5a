/**
 * Messages between the job manager (parent) and one training worker process (child).
 *
 * The same messages travel over `child_process.fork` IPC (CLI, tests, web bridge) and over an
 * Electron `utilityProcess` port (desktop app). The worker never touches SQLite: it reports, and
 * the parent persists.
 */
import type { ErrorPayload } from './errors';
import type { TrainConfig } from './train-config';

/** Parent → worker. */
export type ParentMessage =
  | { type: 'start'; runId: string; config: TrainConfig; runDir: string; resumeFrom?: string }
  | { type: 'pause' }
  | { type: 'resume' }
  | { type: 'cancel' };

/** One optimizer step's measurements. */
export interface StepMetrics {
  step: number;
  epoch: number;
  loss: number;
  valLoss?: number;
  lr: number;
  gradNorm: number;
  tokensPerSecond: number;
  memoryBytes: number;
  timeMs: number;
}

export interface ProgressInfo {
  step: number;
  totalSteps: number;
  epoch: number;
  etaSeconds?: number;
  phase: 'loading' | 'tokenizing' | 'training' | 'evaluating' | 'saving';
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Worker → parent. */
export type WorkerMessage =
  | { type: 'ready'; pid: number }
  | { type: 'progress'; runId: string; progress: ProgressInfo }
  | { type: 'metrics'; runId: string; metrics: StepMetrics }
  | { type: 'log'; runId: string; level: LogLevel; message: string }
  | { type: 'checkpoint'; runId: string; step: number; path: string }
  | { type: 'paused'; runId: string; step: number; checkpoint?: string }
  | { type: 'resumed'; runId: string; step: number }
  | { type: 'done'; runId: string; result: RunResult }
  | { type: 'error'; runId: string; error: ErrorPayload; checkpoint?: string };

export interface RunResult {
  status: 'completed' | 'cancelled';
  steps: number;
  finalLoss?: number;
  bestValLoss?: number;
  adapterPath: string;
  checkpoint?: string;
  trainableParameters: number;
  totalParameters: number;
  backend: string;
  /** Generations for the run's sample prompts before and after training. */
  samples?: { prompt: string; before?: string; after?: string }[];
}

/**
 * The transport the job manager uses to talk to one worker; implemented with
 * `child_process.fork` and with Electron's `utilityProcess`.
 */
export interface WorkerTransport {
  readonly pid: number | undefined;
  send(message: ParentMessage): void;
  onMessage(listener: (message: WorkerMessage) => void): void;
  /** Called once when the process ends: exit code, or the signal that killed it. */
  onExit(listener: (code: number | null, signal: string | null) => void): void;
  kill(signal?: NodeJS.Signals): void;
}
