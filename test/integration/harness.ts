/**
 * Shared setup of the integration tests: a temporary app data folder with the real run store,
 * dataset service and job manager forking the bundled training worker, plus waits on run events
 * and logit comparisons.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadAdapter } from '../../src/engine/lora/adapter';
import { removeLora } from '../../src/engine/lora';
import type { CausalLM } from '../../src/engine/models/transformer';
import { DatasetService, type ImportedDataset } from '../../src/services/datasets';
import { JobManager, silentLogger } from '../../src/services/jobs';
import { RunStore } from '../../src/services/store';
import { createChildProcessTransport } from '../../src/services/transport/child-process';
import type { RunRecord } from '../../src/shared/records';
import { DEFAULT_TRAIN_CONFIG, type LoraSettings, type TrainConfig } from '../../src/shared/train-config';
import { REPO_ROOT } from '../helpers/fixtures';

/**
 * The bundled worker that global-setup builds. Forking the TypeScript source through tsx would load
 * tfjs-core's CommonJS build, which registers no gradient functions, so training would fail.
 */
export const WORKER_BUNDLE = path.join(REPO_ROOT, 'out', 'node', 'worker.mjs');
export const CLI_BUNDLE = path.join(REPO_ROOT, 'out', 'node', 'cli.mjs');

/** Token ids of a short prompt, for comparing logits; all are inside GPT-2's vocabulary. */
export const PROBE_IDS = [[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]];

export interface Studio {
  appDataDir: string;
  store: RunStore;
  datasets: DatasetService;
  jobs: JobManager;
  /** stdout and stderr of every worker, for failure messages. */
  workerOutput: string[];
  close(): Promise<void>;
}

/** Opens the services on `<root>/app`, with workers forked from the bundle. */
export function openStudio(root: string): Studio {
  const appDataDir = path.join(root, 'app');
  const store = RunStore.open(appDataDir);
  const workerOutput: string[] = [];
  const jobs = new JobManager({
    store,
    logger: silentLogger,
    createTransport: () =>
      createChildProcessTransport(WORKER_BUNDLE, { onOutput: (stream, text) => workerOutput.push(`[${stream}] ${text}`) }),
  });
  return {
    appDataDir,
    store,
    datasets: new DatasetService(appDataDir, store),
    jobs,
    workerOutput,
    async close() {
      await jobs.shutdown();
      store.close();
    },
  };
}

export function makeTempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `lora-studio-${prefix}-`));
}

/** Overrides of trainConfig; `lora` fields are merged into its LoRA settings. */
export type ConfigOverrides = Omit<Partial<TrainConfig>, 'lora'> & { lora?: Partial<LoraSettings> };

/**
 * Settings for a short run that lowers a random tiny model's loss: r = 8 on every linear layer,
 * constant learning rate 1e-2, batch 2, 64 tokens, 20 steps, no dropout, no validation and no
 * checkpoints unless overridden.
 */
export function trainConfig(modelPath: string, dataset: Pick<ImportedDataset, 'id' | 'storedPath'> | null, overrides: ConfigOverrides = {}): TrainConfig {
  const { lora, ...rest } = overrides;
  return {
    ...structuredClone(DEFAULT_TRAIN_CONFIG),
    ...(dataset ? { datasetId: dataset.id, datasetPath: dataset.storedPath } : {}),
    modelPath,
    validationSplit: 0,
    learningRate: 1e-2,
    schedule: 'constant',
    maxSteps: 20,
    batchSize: 2,
    maxSeqLength: 64,
    evalSteps: 0,
    saveSteps: 0,
    seed: 7,
    ...rest,
    lora: {
      r: 8,
      loraAlpha: 16,
      loraDropout: 0,
      targetModules: 'all-linear',
      useRslora: false,
      initLoraWeights: 'kaiming',
      ...lora,
    },
  };
}

/**
 * Calls `action` from the metrics event of `step`, synchronously, so the worker is at most one
 * step further when the action takes effect.
 */
export function onStep(studio: Studio, runId: string, step: number, action: () => void): Promise<void> {
  return new Promise((resolve) => {
    const listener = (id: string, metrics: { step: number }) => {
      if (id !== runId || metrics.step < step) return;
      studio.jobs.off('metrics', listener);
      action();
      resolve();
    };
    studio.jobs.on('metrics', listener);
  });
}

/** Starts a run and waits until its worker has exited. */
export async function trainToEnd(studio: Studio, config: TrainConfig): Promise<RunRecord> {
  const run = studio.jobs.start(config, { datasetId: config.datasetId });
  return studio.jobs.whenStopped(run.id);
}

/** Formats the run's status, error, stored log and last worker output for assertion messages. */
export function describeRun(studio: Studio, run: RunRecord): string {
  const events = studio.store.listEvents(run.id).map((event) => `  ${event.level}: ${event.message}`);
  return [`run ${run.id} is ${run.status}`, ...(run.error ? [`  error ${run.error.code}: ${run.error.message}`] : []), ...events, ...studio.workerOutput.slice(-20)].join('\n');
}

/** Returns the stored training loss of each step, in step order. */
export function storedLosses(studio: Studio, runId: string): number[] {
  return studio.store.getMetrics(runId).map((row) => row.loss);
}

export function mean(values: number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

/** Logits `[1, seq, vocab]` of `model` with the adapter in `adapterDir` loaded, or with none. */
export function logitsWithAdapter(model: CausalLM, adapterDir: string | null, inputIds = PROBE_IDS): Float32Array {
  if (adapterDir) loadAdapter(model, adapterDir);
  else removeLora(model);
  const logits = model.forward(inputIds);
  const values = logits.dataSync() as Float32Array;
  logits.dispose();
  return values;
}
