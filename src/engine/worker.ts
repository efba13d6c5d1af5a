/**
 * The training worker: one process per run. It receives `start`, `pause`, `resume` and `cancel`
 * from the job manager and reports progress, metrics, logs, checkpoints and the result. It runs
 * under `child_process.fork` (CLI, tests, web bridge) or as an Electron `utilityProcess` (app);
 * both deliver the same messages.
 */
import { toErrorPayload } from '../shared/errors';
import type { ParentMessage, WorkerMessage } from '../shared/protocol';
import { runTraining, type RunHooks } from './train/run';

interface ParentPort {
  on(event: 'message', listener: (event: { data: unknown }) => void): void;
  postMessage(message: unknown): void;
}

const parentPort = (process as unknown as { parentPort?: ParentPort }).parentPort;

function send(message: WorkerMessage): void {
  if (parentPort) parentPort.postMessage(message);
  else process.send?.(message);
}

function onParentMessage(listener: (message: ParentMessage) => void): void {
  if (parentPort) parentPort.on('message', (event) => listener(event.data as ParentMessage));
  else process.on('message', (message) => listener(message as ParentMessage));
}

let runId = 'unknown';
let requested: 'continue' | 'pause' | 'cancel' = 'continue';
let resumeWaiter: ((decision: 'resume' | 'cancel') => void) | null = null;
let started = false;

const hooks: RunHooks = {
  log: (level, message) => send({ type: 'log', runId, level, message }),
  progress: (progress) => send({ type: 'progress', runId, progress }),
  metrics: (metrics) => send({ type: 'metrics', runId, metrics }),
  checkpoint: (step, path) => send({ type: 'checkpoint', runId, step, path }),
  checkpointRequested: () => requested,
  waitForResume: (step, checkpoint) => {
    send({ type: 'paused', runId, step, checkpoint });
    return new Promise((resolve) => {
      resumeWaiter = (decision) => {
        resumeWaiter = null;
        requested = decision === 'cancel' ? 'cancel' : 'continue';
        if (decision === 'resume') send({ type: 'resumed', runId, step });
        resolve(decision);
      };
    });
  },
};

onParentMessage((message) => {
  switch (message.type) {
    case 'start':
      if (started) return;
      started = true;
      runId = message.runId;
      void start(message);
      break;
    case 'pause':
      if (requested === 'continue') requested = 'pause';
      break;
    case 'resume':
      if (resumeWaiter) resumeWaiter('resume');
      else if (requested === 'pause') requested = 'continue';
      break;
    case 'cancel':
      requested = 'cancel';
      resumeWaiter?.('cancel');
      break;
  }
});

async function start(message: Extract<ParentMessage, { type: 'start' }>): Promise<void> {
  try {
    const outcome = await runTraining(message.config, message.runDir, hooks, message.resumeFrom);
    send({ type: 'done', runId, result: outcome });
    exitSoon(0);
  } catch (error) {
    send({ type: 'error', runId, error: toErrorPayload(error) });
    exitSoon(1);
  }
}

/** Leaves time for the last IPC message to flush before the process ends. */
function exitSoon(code: number): void {
  setTimeout(() => process.exit(code), 100);
}

process.on('uncaughtException', (error) => {
  send({ type: 'error', runId, error: toErrorPayload(error) });
  exitSoon(1);
});
process.on('unhandledRejection', (reason) => {
  send({ type: 'error', runId, error: toErrorPayload(reason) });
  exitSoon(1);
});

send({ type: 'ready', pid: process.pid });
