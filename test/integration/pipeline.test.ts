/**
 * The headless fine-tuning pipeline end to end: dataset import into a real SQLite store, training
 * in forked worker processes (the bundled worker) through the job manager, PEFT export, and
 * loading the exported adapter onto the base model. Also cancel/resume, a killed worker, a
 * diverging run, a model without tokenizer and validation loss.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { encodeRecord } from '../../src/engine/data/encode';
import { exportPeftAdapter, libraryVersions } from '../../src/engine/export';
import { applyLora } from '../../src/engine/lora';
import { loadAdapter, writeAdapterFiles } from '../../src/engine/lora/adapter';
import { loadModel } from '../../src/engine/models';
import type { CausalLM } from '../../src/engine/models/transformer';
import { loadTokenizer } from '../../src/engine/tokenizer';
import { Trainer } from '../../src/engine/train/trainer';
import type { ImportedDataset } from '../../src/services/datasets';
import type { RunRecord } from '../../src/shared/records';
import type { TrainConfig } from '../../src/shared/train-config';
import { DATASETS, maxAbsDiff, readJson } from '../helpers/fixtures';
import { TINY_EOS_TOKEN_ID, TINY_VOCAB_SIZE, tinyLinearShapes, writeTinyModel, type TinyFamily } from '../helpers/tiny-model';
import {
  PROBE_IDS,
  describeRun,
  logitsWithAdapter,
  makeTempDir,
  mean,
  onStep,
  openStudio,
  storedLosses,
  trainConfig,
  trainToEnd,
  type Studio,
} from './harness';

let root: string;
let studio: Studio;
const modelDirs = {} as Record<TinyFamily, string>;
/** A llama folder with the same weights as modelDirs.llama but no tokenizer files. */
let noTokenizerDir: string;
const baseModels = {} as Record<TinyFamily, CausalLM>;

beforeAll(async () => {
  await selectBackend();
  root = makeTempDir('pipeline');
  studio = openStudio(root);
  modelDirs.llama = writeTinyModel(path.join(root, 'models', 'llama'), { family: 'llama', seed: 11, withTokenizer: true });
  modelDirs.gpt2 = writeTinyModel(path.join(root, 'models', 'gpt2'), { family: 'gpt2', seed: 12, withTokenizer: true });
  noTokenizerDir = writeTinyModel(path.join(root, 'models', 'llama-no-tokenizer'), { family: 'llama', seed: 11, withTokenizer: false });
  baseModels.llama = loadModel(modelDirs.llama).model;
  baseModels.gpt2 = loadModel(modelDirs.gpt2).model;
});

afterAll(async () => {
  await studio?.close();
  baseModels.llama?.dispose();
  baseModels.gpt2?.dispose();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

/** Writes a CSV with quoted fields that hold commas, quotes and line breaks. */
function writeCsv(file: string, rows: number): void {
  const quote = (text: string) => `"${text.replace(/"/g, '""')}"`;
  const lines = ['prompt,completion'];
  for (let i = 0; i < rows; i++) {
    const a = i % 9;
    const b = (i * 7) % 11;
    lines.push(`${quote(`Add ${a} and ${b}, then say "done".`)},${quote(`${a} plus ${b} is ${a + b}.\nDone.`)}`);
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

/** Writes plain text: one paragraph per record, separated by blank lines. */
function writeText(file: string, paragraphs: number): void {
  const colors = ['red', 'green', 'blue', 'yellow', 'black', 'white'];
  const text = Array.from({ length: paragraphs }, (_, i) => {
    const color = colors[i % colors.length];
    return `The ${color} box number ${i} sits on the shelf.\nIt is ${color} because it was painted ${color}.`;
  });
  fs.writeFileSync(file, text.join('\n\n') + '\n');
}

/** Reads the JSON header of a safetensors file: `{name: {dtype, shape, data_offsets}}`. */
function readSafetensorsJson(file: string): Record<string, { dtype: string; shape: number[] }> {
  const bytes = fs.readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'));
  delete header.__metadata__;
  return header;
}

interface FormatCase {
  label: string;
  file: () => string;
  family: TinyFamily;
  format: string;
  schema: string;
  /** Chat and prompt/completion rows carry over 100 prompt tokens before the first target. */
  maxSeqLength: number;
}

const FORMAT_CASES: FormatCase[] = [
  { label: 'alpaca JSON array', file: () => path.join(DATASETS, 'alpaca_en_demo.json'), family: 'llama', format: 'json', schema: 'alpaca', maxSeqLength: 64 },
  { label: 'OpenAI chat JSONL', file: () => path.join(DATASETS, 'openai_chat_drone_training.jsonl'), family: 'gpt2', format: 'jsonl', schema: 'messages', maxSeqLength: 192 },
  { label: 'prompt/completion JSONL', file: () => path.join(DATASETS, 'prompt_completion_text2json_train.jsonl'), family: 'llama', format: 'jsonl', schema: 'prompt_completion', maxSeqLength: 192 },
  { label: 'ZSTD Parquet', file: () => path.join(DATASETS, 'shellmaster_prompt_response_zstd.parquet'), family: 'gpt2', format: 'parquet', schema: 'prompt_completion', maxSeqLength: 64 },
  { label: 'c4 text JSONL', file: () => path.join(DATASETS, 'c4_demo_text.jsonl'), family: 'llama', format: 'jsonl', schema: 'text', maxSeqLength: 64 },
  {
    label: 'CSV',
    file: () => {
      const file = path.join(root, 'sums.csv');
      writeCsv(file, 40);
      return file;
    },
    family: 'gpt2',
    format: 'csv',
    schema: 'prompt_completion',
    maxSeqLength: 64,
  },
  {
    label: 'plain text',
    file: () => {
      const file = path.join(root, 'boxes.txt');
      writeText(file, 40);
      return file;
    },
    family: 'llama',
    format: 'text',
    schema: 'text',
    maxSeqLength: 64,
  },
];

describe.each(FORMAT_CASES)('$label dataset', (testCase) => {
  it('trains, exports and reloads the adapter', async () => {
    const dataset = await studio.datasets.import(testCase.file());
    expect(dataset.format).toBe(testCase.format);
    expect(dataset.schema).toBe(testCase.schema);
    expect(dataset.rowsKept).toBeGreaterThan(0);

    const modelDir = modelDirs[testCase.family];
    const run = await trainToEnd(studio, trainConfig(modelDir, dataset, { maxSeqLength: testCase.maxSeqLength }));
    expect(run.status, describeRun(studio, run)).toBe('completed');
    expect(run.totalSteps).toBe(20);
    expect(run.steps).toBe(20);

    const metrics = studio.store.getMetrics(run.id);
    expect(metrics.map((row) => row.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const losses = metrics.map((row) => row.loss);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(run.finalLoss).toBe(losses[19]);
    expect(mean(losses.slice(-5))).toBeLessThan(mean(losses.slice(0, 5)));

    const exported = exportPeftAdapter(path.join(run.runDir, 'adapter'), path.join(root, 'exports', run.id), {
      runId: run.id,
      baseModel: modelDir,
      method: 'lora',
      datasetSha256: dataset.sha256,
      seed: run.config.seed,
      config: run.config,
      versions: libraryVersions(),
      createdAt: new Date().toISOString(),
    });
    checkPeftFolder(exported, testCase.family, modelDir);

    const model = baseModels[testCase.family];
    const base = logitsWithAdapter(model, null);
    const fromRun = logitsWithAdapter(model, path.join(run.runDir, 'adapter'));
    const fromExport = logitsWithAdapter(model, exported);
    expect(maxAbsDiff(fromExport, fromRun)).toBeLessThanOrEqual(1e-6);
    // The trained lora_B is no longer zero, so the adapter changes the logits.
    expect(maxAbsDiff(fromRun, base)).toBeGreaterThan(1e-4);
  });
});

/** Checks an exported adapter folder against PEFT's file layout for a tiny model. */
function checkPeftFolder(dir: string, family: TinyFamily, modelDir: string): void {
  const config = readJson(path.join(dir, 'adapter_config.json'));
  expect(config.peft_type).toBe('LORA');
  expect(config.task_type).toBe('CAUSAL_LM');
  expect(config.r).toBe(8);
  expect(config.lora_alpha).toBe(16);
  expect(config.target_modules).toBe('all-linear');
  expect(config.base_model_name_or_path).toBe(modelDir);
  expect(config.fan_in_fan_out).toBe(family === 'gpt2');

  const header = readSafetensorsJson(path.join(dir, 'adapter_model.safetensors'));
  const expected: Record<string, { dtype: string; shape: number[] }> = {};
  for (const [name, shape] of tinyLinearShapes(family)) {
    expected[`base_model.model.${name}.lora_A.weight`] = { dtype: 'F32', shape: [8, shape.inFeatures] };
    expected[`base_model.model.${name}.lora_B.weight`] = { dtype: 'F32', shape: [shape.outFeatures, 8] };
  }
  expect(Object.keys(header).sort()).toEqual(Object.keys(expected).sort());
  for (const [key, tensor] of Object.entries(expected)) {
    expect({ key, dtype: header[key].dtype, shape: header[key].shape }).toEqual({ key, ...tensor });
  }
}

describe.each(['llama', 'gpt2'] as const)('%s in-process training', (family) => {
  it('exported adapter reproduces the trained logits', async () => {
    const modelDir = modelDirs[family];
    const tokenizer = await loadTokenizer(modelDir);
    const texts = ['The cat sat on the mat.', 'A dog ran in the park today.', 'Rain fell on the quiet town.', 'She wrote a letter to her friend.'];
    const train = texts.map((text) => {
      const encoded = encodeRecord({ kind: 'text', text }, tokenizer, { maxSeqLength: 32 });
      if (!encoded.ok) throw new Error(encoded.message);
      return encoded.example;
    });
    const settings = trainConfig(modelDir, null, { maxSteps: 4, lora: { loraDropout: 0.1 } });
    const { model } = loadModel(modelDir);
    applyLora(model, settings.lora, settings.seed);
    const trainer = new Trainer({ model, train, settings, padTokenId: TINY_EOS_TOKEN_ID, baseModel: modelDir });

    const losses = Array.from({ length: 4 }, () => trainer.trainStep().loss);
    // Near-zero logits give a first loss close to ln(vocab); 0.25 leaves room for 40 tokens' noise.
    expect(Math.abs(losses[0] - Math.log(TINY_VOCAB_SIZE))).toBeLessThan(0.25);
    expect(losses[3]).toBeLessThan(losses[0]);

    const written = path.join(root, 'in-process', family, 'adapter');
    fs.mkdirSync(written, { recursive: true });
    writeAdapterFiles(model, settings.lora, written, modelDir);
    const exported = exportPeftAdapter(written, path.join(root, 'in-process', family, 'export'), {
      baseModel: modelDir,
      method: 'lora',
      versions: libraryVersions(),
      createdAt: new Date().toISOString(),
    });

    const trained = model.forward(PROBE_IDS);
    const fresh = loadModel(modelDir).model;
    loadAdapter(fresh, exported);
    const reloaded = fresh.forward(PROBE_IDS);
    expect(maxAbsDiff(reloaded.dataSync(), trained.dataSync())).toBeLessThanOrEqual(1e-6);

    trained.dispose();
    reloaded.dispose();
    fresh.dispose();
    trainer.dispose();
    model.dispose();
  });
});

describe('interrupted runs', () => {
  let dataset: ImportedDataset;
  let config: TrainConfig;
  let reference: number[];

  beforeAll(async () => {
    dataset = await studio.datasets.import(path.join(DATASETS, 'shellmaster_prompt_response_zstd.parquet'));
    // Dropout 0.1 makes the loss depend on the dropout seeds, which a resume must restore.
    config = trainConfig(modelDirs.llama, dataset, { saveSteps: 5, lora: { loraDropout: 0.1 } });
    const run = await trainToEnd(studio, config);
    expect(run.status, describeRun(studio, run)).toBe('completed');
    reference = storedLosses(studio, run.id);
    expect(reference).toHaveLength(20);
  });

  it('cancel then resume repeats the uninterrupted losses', async () => {
    const run = studio.jobs.start(config, { datasetId: dataset.id });
    await onStep(studio, run.id, 8, () => studio.jobs.cancel(run.id));
    const cancelled = await studio.jobs.whenStopped(run.id);
    expect(cancelled.status, describeRun(studio, cancelled)).toBe('cancelled');
    // The worker checks for a cancel between steps, so it may finish one more step first.
    const checkpoint = studio.store.listCheckpoints(run.id)[0];
    expect([8, 9]).toContain(checkpoint.step);
    expect(readJson(path.join(checkpoint.path, 'trainer_state.json')).step).toBe(checkpoint.step);
    expect(studio.store.getMetrics(run.id)).toHaveLength(checkpoint.step!);

    studio.jobs.resume(run.id);
    const resumed = await studio.jobs.whenStopped(run.id);
    expect(resumed.status, describeRun(studio, resumed)).toBe('completed');
    expect(resumed.steps).toBe(20);
    expect(resumed.finalLoss).toBe(reference[19]);
    const metrics = studio.store.getMetrics(run.id);
    expect(metrics.map((row) => row.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(maxAbsDiff(metrics.map((row) => row.loss), reference)).toBeLessThanOrEqual(1e-5);
  });

  it('SIGKILL fails the run and resume recovers it', async () => {
    const run = studio.jobs.start(config, { datasetId: dataset.id });
    await onStep(studio, run.id, 7, () => {
      const pid = studio.jobs.workerPid(run.id);
      expect(pid).toBeTypeOf('number');
      process.kill(pid!, 'SIGKILL');
    });
    const killed = await studio.jobs.whenStopped(run.id);
    expect(killed.status).toBe('failed');
    expect(killed.error?.code).toBe('WORKER_EXITED');
    expect(killed.error?.message).toContain('SIGKILL');
    // Metrics reported before the kill are kept.
    expect(studio.store.getMetrics(run.id).length).toBeGreaterThanOrEqual(7);
    const checkpoint = studio.store.listCheckpoints(run.id)[0];
    expect(checkpoint.step).toBeGreaterThanOrEqual(5);
    expect(checkpoint.step! % 5).toBe(0);

    // The manager keeps working after a worker died.
    const other = await trainToEnd(studio, { ...config, maxSteps: 3, saveSteps: 0 });
    expect(other.status, describeRun(studio, other)).toBe('completed');
    expect(studio.store.getMetrics(other.id)).toHaveLength(3);

    studio.jobs.resume(run.id);
    const resumed = await studio.jobs.whenStopped(run.id);
    expect(resumed.status, describeRun(studio, resumed)).toBe('completed');
    const events = studio.store.listEvents(run.id).map((event) => event.message);
    expect(events.some((message) => message.includes(checkpoint.path) && message.includes(`step ${checkpoint.step}`))).toBe(true);
    const metrics = studio.store.getMetrics(run.id);
    expect(metrics.map((row) => row.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(maxAbsDiff(metrics.map((row) => row.loss), reference)).toBeLessThanOrEqual(1e-5);
  });
});

describe('failing runs', () => {
  let dataset: ImportedDataset;

  beforeAll(async () => {
    dataset = await studio.datasets.import(path.join(DATASETS, 'shellmaster_prompt_response_zstd.parquet'));
  });

  it('diverging loss fails with NAN_LOSS', async () => {
    // Adam moves every weight by about the learning rate per step, and RMSNorm rescales any finite
    // activation, so only a rate whose products overflow float32 (1e20 · 1e20) breaks the loss.
    const config = trainConfig(modelDirs.llama, dataset, { learningRate: 1e20, maxGradNorm: 0, saveSteps: 1 });
    const run = await trainToEnd(studio, config);
    expect(run.status, describeRun(studio, run)).toBe('failed');
    expect(run.error?.code).toBe('NAN_LOSS');

    const goodSteps = studio.store.getMetrics(run.id).length;
    expect(goodSteps).toBeGreaterThanOrEqual(1);
    expect(run.error?.message).toContain(`at step ${goodSteps + 1}`);
    const checkpoint = studio.store.listCheckpoints(run.id)[0];
    expect(checkpoint.step).toBe(goodSteps);
    expect(readJson(path.join(checkpoint.path, 'trainer_state.json')).step).toBe(goodSteps);
    expect(fs.existsSync(path.join(checkpoint.path, 'adapter_model.safetensors'))).toBe(true);
    const events = studio.store.listEvents(run.id).map((event) => event.message);
    expect(events.some((message) => message.includes(`Last good checkpoint: ${checkpoint.path}`))).toBe(true);
  });

  it('text data without tokenizer fails with TOKENIZER_MISSING', async () => {
    const run = await trainToEnd(studio, trainConfig(noTokenizerDir, dataset, { maxSteps: 5 }));
    expect(run.status, describeRun(studio, run)).toBe('failed');
    expect(run.error?.code).toBe('TOKENIZER_MISSING');
    expect(studio.store.getMetrics(run.id)).toHaveLength(0);
  });

  it('pre-tokenized data trains without tokenizer', async () => {
    const file = path.join(root, 'tokens.jsonl');
    const rows = Array.from({ length: 16 }, (_, i) => JSON.stringify({ input_ids: Array.from({ length: 24 }, (_, t) => 1000 + ((i + t) % 12) * 37) }));
    fs.writeFileSync(file, rows.join('\n') + '\n');
    const tokens = await studio.datasets.import(file);
    expect(tokens.schema).toBe('tokens');

    const run = await trainToEnd(studio, trainConfig(noTokenizerDir, tokens, { maxSteps: 10 }));
    expect(run.status, describeRun(studio, run)).toBe('completed');
    const losses = storedLosses(studio, run.id);
    expect(losses).toHaveLength(10);
    expect(mean(losses.slice(-3))).toBeLessThan(mean(losses.slice(0, 3)));
  });
});

describe('validation', () => {
  it('evalSteps adds valLoss at those steps', async () => {
    const dataset = await studio.datasets.import(path.join(DATASETS, 'shellmaster_prompt_response_zstd.parquet'));
    const run: RunRecord = await trainToEnd(studio, trainConfig(modelDirs.gpt2, dataset, { maxSteps: 10, evalSteps: 4, validationSplit: 0.25 }));
    expect(run.status, describeRun(studio, run)).toBe('completed');

    const metrics = studio.store.getMetrics(run.id);
    expect(metrics).toHaveLength(10);
    // Every evalSteps-th step, and the last step.
    expect(metrics.filter((row) => row.valLoss !== undefined).map((row) => row.step)).toEqual([4, 8, 10]);
    const valLosses = metrics.flatMap((row) => (row.valLoss === undefined ? [] : [row.valLoss]));
    expect(valLosses.every((value) => value > 0 && Number.isFinite(value))).toBe(true);
    expect(run.bestValLoss).toBe(Math.min(...valLosses));
  });
});
