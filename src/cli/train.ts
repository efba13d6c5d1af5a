/**
 * `train` and `demo`: import the dataset into the store, start the run in a worker process,
 * show progress, and report the result.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StudioError, formatError, toErrorPayload } from '../shared/errors';
import type { RunRecord } from '../shared/records';
import type { TrainConfig } from '../shared/train-config';
import { exportPeftAdapter, libraryVersions } from '../engine/export';
import { estimateTraining } from '../engine/estimate';
import { inspectModel } from '../engine/models/inspect';
import { locateModelFiles, readModelConfig } from '../engine/models/loader';
import { loadTokenizer, type Tokenizer } from '../engine/tokenizer';
import type { ImportedDataset } from '../services/datasets';
import { formatHelp, parseCommand, requireFlag, stringFlag, type OptionTable } from './args';
import { openContext, packageRoot, type CliContext } from './context';
import { ProgressBar, formatDuration } from './progress';
import { TRAINING_OPTIONS, configFromFlags } from './train-options';

const COMMON: OptionTable = {
  'data-dir': { type: 'string', help: 'app data folder with studio.db (default: LORA_STUDIO_HOME or ~/.local/share/lora-studio)' },
  json: { type: 'boolean', help: 'print the finished run as JSON on stdout' },
  verbose: { type: 'boolean', short: 'v', help: 'show the worker\'s log lines' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

const TRAIN_OPTIONS: OptionTable = {
  model: { type: 'string', help: 'Hugging Face model folder (config.json, model.safetensors, tokenizer.json)' },
  data: { type: 'string', help: 'dataset file: JSONL, JSON, CSV/TSV, Parquet or text' },
  schema: { type: 'string', help: 'dataset schema instead of detection: text, prompt_completion, alpaca, messages, sharegpt, tokens' },
  ...TRAINING_OPTIONS,
  ...COMMON,
};

export async function trainCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, TRAIN_OPTIONS, false);
  if (values.help) {
    process.stdout.write(formatHelp('lora-studio train --model DIR --data FILE [options]', 'Fine-tunes a LoRA adapter on a dataset and records the run.', TRAIN_OPTIONS));
    return 0;
  }
  const modelPath = path.resolve(requireFlag(values, 'model', 'Pass --model with a Hugging Face model folder.'));
  const dataPath = path.resolve(requireFlag(values, 'data', 'Pass --data with a dataset file.'));
  const info = checkModel(modelPath);
  const config = configFromFlags(values, modelPath, info.defaultTargets);
  const context = openContext(stringFlag(values, 'data-dir'), Boolean(values.verbose));
  try {
    const run = await trainWithContext(context, config, dataPath, stringFlag(values, 'schema'), Boolean(values.json));
    return run.status === 'completed' ? 0 : 1;
  } finally {
    await context.close();
  }
}

/** Imports the data, runs training to the end and prints a summary; returns the final run. */
export async function trainWithContext(context: CliContext, config: TrainConfig, dataPath: string, schema: string | undefined, json: boolean): Promise<RunRecord> {
  const tokenizer = await loadTokenizer(config.modelPath).catch(() => undefined);
  const dataset = await importData(context, dataPath, schema, tokenizer, config.maxSeqLength, json);
  config.datasetId = dataset.id;
  config.datasetPath = dataset.storedPath;
  if (config.validationPath) {
    const validation = await importData(context, path.resolve(config.validationPath), schema, tokenizer, config.maxSeqLength, json);
    config.validationPath = validation.storedPath;
  }

  if (!json) printEstimate(config, dataset.report.rowsKept);

  const bar = new ProgressBar();
  const run = context.jobs.start(config, { name: config.name, datasetId: dataset.id });
  if (!json) process.stderr.write(`run ${run.id} started (${run.runDir})\n`);
  const onProgress = (runId: string, progress: Parameters<ProgressBar['progress']>[0]) => runId === run.id && !json && bar.progress(progress);
  const onMetrics = (runId: string, metrics: Parameters<ProgressBar['metrics']>[0]) => runId === run.id && !json && bar.metrics(metrics);
  const onLog = (line: { runId: string; level: string; message: string }) => {
    if (line.runId === run.id && !json && line.level !== 'debug') bar.log(`${line.level}: ${line.message}`);
  };
  context.jobs.on('progress', onProgress);
  context.jobs.on('metrics', onMetrics);
  context.jobs.on('log', onLog);
  const interrupt = () => {
    bar.log('cancelling: the run saves a checkpoint and stops…');
    context.jobs.cancel(run.id);
  };
  process.once('SIGINT', interrupt);
  let finished: RunRecord;
  try {
    finished = await context.jobs.whenStopped(run.id);
  } finally {
    process.off('SIGINT', interrupt);
    context.jobs.off('progress', onProgress);
    context.jobs.off('metrics', onMetrics);
    context.jobs.off('log', onLog);
    bar.done();
  }
  printRunSummary(finished, json);
  return finished;
}

async function importData(context: CliContext, dataPath: string, schema: string | undefined, tokenizer: Tokenizer | undefined, maxSeqLength: number, json: boolean): Promise<ImportedDataset> {
  const dataset = await context.datasets.import(dataPath, { schemaOverride: schema as never, tokenizer, maxSeqLength });
  if (!json) printImportSummary(dataset);
  return dataset;
}

/** WebAssembly memory is addressed with 32 bits: the wasm backend's heap cannot grow past 4 GiB. */
const WASM_HEAP_LIMIT_BYTES = 4 * 1024 ** 3;

/** Prints the pre-run estimate: trainable parameters, peak memory and time. */
function printEstimate(config: TrainConfig, examples: number): void {
  const estimate = estimateTraining(inspectModel(config.modelPath), config, config.backend ?? 'wasm', examples);
  const mib = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MiB`;
  const { memory } = estimate;
  process.stderr.write(
    `estimate: ${estimate.trainableParameters.toLocaleString('en-US')} trainable parameters, peak memory up to ${mib(memory.totalBytes)} with full-length sequences ` +
      `(weights ${mib(memory.weightsBytes)}, activations ${mib(memory.activationsBytes)}), ${estimate.totalSteps} steps, ` +
      `about ${formatDuration(estimate.estimatedSeconds)} at ${(estimate.assumedFlops / 1e9).toFixed(0)} GFLOP/s\n`,
  );
  if (memory.totalBytes > WASM_HEAP_LIMIT_BYTES && (config.backend ?? 'wasm') === 'wasm') {
    process.stderr.write('warning: at full length the estimate exceeds the WebAssembly backend\'s 4 GiB heap; add --gradient-checkpointing or lower --batch-size or --max-seq-length.\n');
  }
}

export function printImportSummary(dataset: ImportedDataset): void {
  const report = dataset.report;
  process.stderr.write(`dataset ${dataset.name}: ${dataset.format}, schema ${dataset.schema}, ${report.rowsKept} of ${report.rowsRead} rows kept, sha256 ${dataset.sha256.slice(0, 12)}…\n`);
  for (const skipped of report.skipped.slice(0, 5)) {
    const where = skipped.line !== undefined ? `line ${skipped.line}` : `row ${skipped.row}`;
    process.stderr.write(`  skipped ${where}: ${skipped.message}\n`);
  }
  if (report.rowsSkipped > 5) process.stderr.write(`  … and ${report.rowsSkipped - 5} more skipped rows (see ${path.join(path.dirname(dataset.storedPath), 'report.json')})\n`);
}

function printRunSummary(run: RunRecord, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(run, null, 2) + '\n');
    return;
  }
  const lines = [`run ${run.id}: ${run.status} after ${run.steps ?? 0} steps`];
  if (run.finalLoss !== null && run.finalLoss !== undefined) lines.push(`  final loss ${run.finalLoss.toFixed(4)}`);
  if (run.bestValLoss !== null && run.bestValLoss !== undefined) lines.push(`  best validation loss ${run.bestValLoss.toFixed(4)}`);
  if (run.error) lines.push(`  ${formatError(run.error)}`);
  if (run.status === 'completed') lines.push(`  adapter: ${path.join(run.runDir, 'adapter')}`);
  process.stdout.write(lines.join('\n') + '\n');
}

export function checkModel(modelPath: string) {
  const info = inspectModel(modelPath);
  if (!info.supported) {
    // Missing or damaged files raise their own error (MODEL_FILES_MISSING, MODEL_FORMAT) here.
    readModelConfig(modelPath);
    locateModelFiles(modelPath);
    throw new StudioError('MODEL_UNSUPPORTED', `${modelPath}: ${info.unsupportedReason}`, 'Pick a GPT-2, Llama, Qwen2 or Mistral model folder with safetensors weights.');
  }
  return info;
}

/** The demo's chat dataset in resources/demo-data (see resources/README.md). */
const DEMO_DATASET_FILE = 'chat-storyteller.jsonl';

const DEMO_OPTIONS: OptionTable = {
  'max-steps': { type: 'string', help: 'optimizer steps (default 80)' },
  out: { type: 'string', help: 'folder for the exported PEFT adapter (default: the run\'s exports/peft-adapter)' },
  ...COMMON,
};

/**
 * Fine-tunes the built-in demo model on the built-in dataset, prints generations before and
 * after side by side, and exports the adapter.
 */
export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, DEMO_OPTIONS, false);
  if (values.help) {
    process.stdout.write(formatHelp('lora-studio demo [options]', 'Trains LoRA on the built-in demo model and dataset, then exports the adapter.', DEMO_OPTIONS));
    return 0;
  }
  const resources = path.join(packageRoot(), 'resources');
  const modelPath = path.join(resources, 'demo-model');
  const dataDir = path.join(resources, 'demo-data');
  const dataFile = fs.existsSync(path.join(dataDir, DEMO_DATASET_FILE)) ? DEMO_DATASET_FILE : undefined;
  if (!fs.existsSync(path.join(modelPath, 'config.json')) || !dataFile) {
    throw new StudioError('MODEL_FILES_MISSING', `The demo resources are missing from ${resources}.`, 'Rebuild them with `npm run demo:build-resources`.');
  }
  const promptsFile = path.join(dataDir, 'sample-prompts.json');
  const samplePrompts: string[] = fs.existsSync(promptsFile) ? JSON.parse(fs.readFileSync(promptsFile, 'utf8')) : [];
  const info = checkModel(modelPath);
  // Tuned on the demo model: a 0.9M-parameter model needs LoRA on every linear layer to take on
  // the dataset's reply style within a minute or two of CPU time.
  const config = configFromFlags(values, modelPath, info.defaultTargets, {
    name: 'demo',
    learningRate: 3e-3,
    schedule: 'cosine',
    warmupSteps: 5,
    maxSteps: 80,
    batchSize: 8,
    maxSeqLength: 128,
    evalSteps: 20,
    saveSteps: 40,
    validationSplit: 0.1,
    samplePrompts: samplePrompts.slice(0, 3),
    lora: { r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: 'all-linear', useRslora: false, initLoraWeights: 'kaiming' },
  });

  const context = openContext(stringFlag(values, 'data-dir'), Boolean(values.verbose));
  try {
    process.stderr.write(`demo: ${info.architecture}, ${(info.parameterCount / 1e6).toFixed(2)}M parameters, data ${dataFile}, data folder ${context.appDataDir}\n`);
    const run = await trainWithContext(context, config, path.join(dataDir, dataFile), undefined, Boolean(values.json));
    if (run.status !== 'completed') return 1;
    const detail = context.store.getRun(run.id);
    const samples = readSamples(run);
    if (!values.json) printSideBySide(samples);
    const destination = stringFlag(values, 'out') ?? path.join(run.runDir, 'exports', 'peft-adapter');
    const exported = exportPeftAdapter(path.join(run.runDir, 'adapter'), destination, {
      runId: run.id,
      name: run.name,
      baseModel: modelPath,
      method: 'lora',
      datasetSha256: context.store.getDataset(config.datasetId!).sha256,
      seed: config.seed,
      config: detail.config,
      finalMetrics: { loss: detail.finalLoss, best_val_loss: detail.bestValLoss, steps: detail.steps },
      versions: libraryVersions(),
      createdAt: new Date().toISOString(),
    });
    context.store.addArtifact({ runId: run.id, kind: 'adapter', path: exported });
    if (!values.json) {
      process.stdout.write(`\nPEFT adapter exported to ${exported}\nrun recorded in ${path.join(context.appDataDir, 'studio.db')} (lora-studio runs show ${run.id})\n`);
    }
    return 0;
  } catch (error) {
    process.stderr.write(`${formatError(toErrorPayload(error))}\n`);
    return 1;
  } finally {
    await context.close();
  }
}

function readSamples(run: RunRecord): { prompt: string; before?: string; after?: string }[] {
  const file = path.join(run.runDir, 'result.json');
  if (!fs.existsSync(file)) return [];
  return JSON.parse(fs.readFileSync(file, 'utf8')).samples ?? [];
}

/** Prints each prompt with the base and fine-tuned generations in two columns. */
export function printSideBySide(samples: { prompt: string; before?: string; after?: string }[]): void {
  if (samples.length === 0) return;
  const width = Math.max(30, Math.min(60, Math.floor(((process.stdout.columns ?? 120) - 5) / 2)));
  const wrap = (text: string) => {
    const lines: string[] = [];
    for (const paragraph of text.split('\n')) {
      let line = '';
      for (const word of paragraph.split(' ')) {
        if ((line + ' ' + word).trim().length > width) {
          lines.push(line);
          line = word;
        } else line = (line + ' ' + word).trim();
      }
      lines.push(line);
    }
    return lines;
  };
  const rule = `${'-'.repeat(width)}-+-${'-'.repeat(width)}`;
  process.stdout.write(`\n${'before fine-tuning'.padEnd(width)} | after fine-tuning\n${rule}\n`);
  for (const sample of samples) {
    process.stdout.write(`prompt: ${sample.prompt}\n`);
    const left = wrap(sample.before ?? '(none)');
    const right = wrap(sample.after ?? '(none)');
    for (let i = 0; i < Math.max(left.length, right.length); i++) {
      process.stdout.write(`${(left[i] ?? '').padEnd(width)} | ${right[i] ?? ''}\n`);
    }
    process.stdout.write(`${rule}\n`);
  }
}
