/**
 * A training worker that speaks the real protocol without training anything, for job manager tests.
 *
 * Usage: fork with `args: [mode, stepDelayMs]`.
 *   complete  trains `config.maxSteps` steps, then reports done with an adapter folder.
 *   crash     exits with code 3 after step 2, without reporting a result.
 *   hang      reports steps 1..3, then ignores every message until it is killed.
 *   error     reports steps 1..2, then an error message (NAN_LOSS) and exits with code 1.
 *
 * Each step reports metrics with loss = 2 + 1/step, and valLoss = 1 + 1/step every
 * `config.evalSteps` steps. Every `config.saveSteps` steps, on pause and on cancel it writes a
 * checkpoint folder `checkpoints/step-N/` containing `state.json`. A `start` message is appended to
 * `<runDir>/start-messages.jsonl`, so tests can read what the worker received.
 */
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ParentMessage, StepMetrics, WorkerMessage } from '../../src/shared/protocol';
import type { TrainConfig } from '../../src/shared/train-config';

type Mode = 'complete' | 'crash' | 'hang' | 'error';

const mode = (process.argv[2] ?? 'complete') as Mode;
const stepDelayMs = Number(process.argv[3] ?? '0');

let runId = '';
let runDir = '';
let config: TrainConfig | undefined;
let step = 0;
let paused = false;
let cancelRequested = false;
let hanging = false;
let timer: NodeJS.Timeout | undefined;

/** Schedules the next step; one timer at most, so pause and resume never start a second loop. */
function scheduleStep(): void {
  clearTimeout(timer);
  timer = setTimeout(runStep, stepDelayMs);
}

function send(message: WorkerMessage, then?: () => void): void {
  process.send!(message, () => then?.());
}

function lossAt(stepNumber: number): number {
  return 2 + 1 / stepNumber;
}

function valLossAt(stepNumber: number): number {
  return 1 + 1 / stepNumber;
}

function writeCheckpoint(): string {
  const dir = join(runDir, 'checkpoints', `step-${step}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'state.json'), JSON.stringify({ step }));
  return dir;
}

function finish(status: 'completed' | 'cancelled'): void {
  const checkpoint = status === 'cancelled' ? writeCheckpoint() : undefined;
  const adapterPath = join(runDir, 'adapter');
  mkdirSync(adapterPath, { recursive: true });
  writeFileSync(join(adapterPath, 'adapter_config.json'), JSON.stringify({ r: config!.lora.r }));
  writeFileSync(join(adapterPath, 'adapter_model.safetensors'), Buffer.alloc(256, 1));

  send(
    {
      type: 'done',
      runId,
      result: {
        status,
        steps: step,
        finalLoss: step > 0 ? lossAt(step) : undefined,
        adapterPath,
        checkpoint,
        trainableParameters: 1000,
        totalParameters: 100_000,
        backend: 'fake',
      },
    },
    () => process.disconnect(),
  );
}

function runStep(): void {
  if (hanging || paused) return;
  if (cancelRequested) {
    finish('cancelled');
    return;
  }
  if (step >= config!.maxSteps) {
    finish('completed');
    return;
  }

  step += 1;
  if (mode === 'error' && step === 3) {
    send(
      {
        type: 'error',
        runId,
        error: { code: 'NAN_LOSS', message: 'Loss became NaN at step 3.', hint: 'Lower learningRate.' },
      },
      () => process.exit(1),
    );
    return;
  }

  const metrics: StepMetrics = {
    step,
    epoch: step / config!.maxSteps,
    loss: lossAt(step),
    lr: config!.learningRate,
    gradNorm: 0.5,
    tokensPerSecond: 1000,
    memoryBytes: 1 << 20,
    timeMs: 1,
  };
  if (config!.evalSteps > 0 && step % config!.evalSteps === 0) metrics.valLoss = valLossAt(step);
  send({ type: 'metrics', runId, metrics });
  send({ type: 'progress', runId, progress: { step, totalSteps: config!.maxSteps, epoch: 0, phase: 'training' } });

  if (config!.saveSteps > 0 && step % config!.saveSteps === 0) {
    send({ type: 'checkpoint', runId, step, path: writeCheckpoint() });
  }

  if (mode === 'crash' && step === 2) {
    process.exit(3);
  }
  if (mode === 'hang' && step === 3) {
    hanging = true;
    // Keeps the process alive, as a worker stuck in a native call would be.
    setInterval(() => {}, 60_000);
    return;
  }

  scheduleStep();
}

function start(message: Extract<ParentMessage, { type: 'start' }>): void {
  runId = message.runId;
  runDir = message.runDir;
  config = message.config;
  appendFileSync(join(runDir, 'start-messages.jsonl'), `${JSON.stringify(message)}\n`);

  if (message.resumeFrom) {
    const state = JSON.parse(readFileSync(join(message.resumeFrom, 'state.json'), 'utf8')) as { step: number };
    step = state.step;
  }
  send({ type: 'log', runId, level: 'info', message: `fake worker started at step ${step}` });
  send({ type: 'progress', runId, progress: { step, totalSteps: config.maxSteps, epoch: 0, phase: 'training' } });
  scheduleStep();
}

process.on('message', (message: ParentMessage) => {
  if (hanging) return;
  switch (message.type) {
    case 'start':
      start(message);
      break;
    case 'pause':
      paused = true;
      send({ type: 'paused', runId, step, checkpoint: writeCheckpoint() });
      break;
    case 'resume':
      paused = false;
      send({ type: 'resumed', runId, step });
      scheduleStep();
      break;
    case 'cancel':
      cancelRequested = true;
      if (paused) {
        paused = false;
        scheduleStep();
      }
      break;
  }
});

send({ type: 'ready', pid: process.pid });
