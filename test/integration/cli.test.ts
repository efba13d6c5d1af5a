/**
 * The `lora-studio` command line as a user runs it: `node out/node/cli.mjs` in a child process with
 * LORA_STUDIO_HOME pointing at a temporary app data folder.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { encodeRecord } from '../../src/engine/data/encode';
import type { NormalizedRecord } from '../../src/engine/data/normalize';
import { loadAdapter } from '../../src/engine/lora/adapter';
import { loadModel } from '../../src/engine/models';
import { loadTokenizer } from '../../src/engine/tokenizer';
import { importDataset, readNormalized } from '../../src/services/datasets';
import { maxAbsDiff, readJson } from '../helpers/fixtures';
import { TINY_EOS_TOKEN_ID, TINY_VOCAB_SIZE, writeTinyModel } from '../helpers/tiny-model';
import { CLI_BUNDLE, PROBE_IDS, makeTempDir } from './harness';

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

let root: string;
let home: string;
let modelDir: string;
/** Twelve prompt/completion rows, so that `eval` scores few examples. */
let dataFile: string;

const FACTS: Array<[string, string]> = [
  ['What color is the sky on a clear day?', 'Blue.'],
  ['How many legs does a spider have?', 'Eight.'],
  ['What is the opposite of hot?', 'Cold.'],
  ['Which animal says moo?', 'A cow.'],
  ['What do bees make?', 'Honey.'],
  ['How many days are in a week?', 'Seven.'],
  ['What is frozen water called?', 'Ice.'],
  ['Which planet do we live on?', 'Earth.'],
  ['What color is fresh grass?', 'Green.'],
  ['How many wheels does a bicycle have?', 'Two.'],
  ['What falls from clouds when it rains?', 'Water.'],
  ['Which meal is eaten in the morning?', 'Breakfast.'],
];

/** Runs the CLI bundle with `args`; never rejects, so failures can be asserted on. */
function cli(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI_BUNDLE, ...args],
      { env: { ...process.env, LORA_STUDIO_HOME: home }, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        // A process killed by a signal has no numeric exit code.
        let code: number | null = 0;
        if (error) code = typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function describeResult(result: CliResult): string {
  return `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
}

beforeAll(async () => {
  await selectBackend();
  root = makeTempDir('cli');
  home = path.join(root, 'home');
  modelDir = writeTinyModel(path.join(root, 'model'), { family: 'llama', seed: 21, withTokenizer: true });
  dataFile = path.join(root, 'facts.jsonl');
  const rows = FACTS.map(([question, answer]) => JSON.stringify({ prompt: `Question: ${question}\nAnswer:`, completion: ` ${answer}` }));
  fs.writeFileSync(dataFile, rows.join('\n') + '\n');
});

afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('train, runs and export', () => {
  let runId: string;
  let adapterDir: string;

  beforeAll(async () => {
    const result = await cli([
      'train',
      '--model', modelDir,
      '--data', dataFile,
      '--max-steps', '5',
      '--batch-size', '2',
      '--max-seq-length', '64',
      '--lr', '1e-2',
      '--target-modules', 'all-linear',
      '--validation-split', '0',
    ]);
    expect(result.code, describeResult(result)).toBe(0);
    const summary = /^run (\S+): completed after 5 steps$/m.exec(result.stdout);
    expect(summary, describeResult(result)).not.toBeNull();
    runId = summary![1];
    const adapterLine = /^\s*adapter: (.+)$/m.exec(result.stdout);
    expect(adapterLine, describeResult(result)).not.toBeNull();
    adapterDir = adapterLine![1];
  });

  it('train prints the adapter path', () => {
    expect(adapterDir).toBe(path.join(home, 'runs', runId, 'adapter'));
    expect(fs.existsSync(path.join(adapterDir, 'adapter_config.json'))).toBe(true);
    expect(fs.existsSync(path.join(adapterDir, 'adapter_model.safetensors'))).toBe(true);
  });

  it('runs list shows the run', async () => {
    const table = await cli(['runs', 'list']);
    expect(table.code, describeResult(table)).toBe(0);
    const row = table.stdout.split('\n').find((line) => line.startsWith(runId));
    expect(row, describeResult(table)).toBeDefined();
    expect(row).toContain('completed');

    const json = await cli(['runs', 'list', '--json']);
    const runs = JSON.parse(json.stdout) as Array<{ id: string; status: string; steps: number }>;
    expect(runs.map((run) => ({ id: run.id, status: run.status, steps: run.steps }))).toEqual([{ id: runId, status: 'completed', steps: 5 }]);
  });

  it('runs show lists five metrics rows', async () => {
    const result = await cli(['runs', 'show', runId, '--json']);
    expect(result.code, describeResult(result)).toBe(0);
    const detail = JSON.parse(result.stdout) as { id: string; metrics: Array<{ step: number; loss: number }> };
    expect(detail.id).toBe(runId);
    expect(detail.metrics.map((row) => row.step)).toEqual([1, 2, 3, 4, 5]);
    expect(detail.metrics.every((row) => Number.isFinite(row.loss))).toBe(true);
  });

  it('export writes a PEFT folder', async () => {
    const out = path.join(root, 'peft');
    const result = await cli(['export', runId, '--format', 'peft', '--out', out]);
    expect(result.code, describeResult(result)).toBe(0);
    expect(result.stdout.trim()).toBe(out);
    expect(fs.readdirSync(out).sort()).toEqual(['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'run_card.json']);
    expect(fs.readFileSync(path.join(out, 'adapter_model.safetensors'))).toEqual(fs.readFileSync(path.join(adapterDir, 'adapter_model.safetensors')));
    expect(readJson(path.join(out, 'adapter_config.json')).peft_type).toBe('LORA');
    expect(readJson(path.join(out, 'run_card.json')).runId).toBe(runId);
  });

  it('merged export matches base plus adapter', async () => {
    const out = path.join(root, 'merged');
    const result = await cli(['export', runId, '--format', 'merged', '--out', out]);
    expect(result.code, describeResult(result)).toBe(0);
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      expect(fs.existsSync(path.join(out, file)), file).toBe(true);
    }

    const merged = loadModel(out).model;
    const adapted = loadModel(modelDir).model;
    loadAdapter(adapted, adapterDir);
    const mergedLogits = merged.forward(PROBE_IDS);
    const adaptedLogits = adapted.forward(PROBE_IDS);
    const base = loadModel(modelDir).model;
    const baseLogits = base.forward(PROBE_IDS);
    expect(maxAbsDiff(mergedLogits.dataSync(), adaptedLogits.dataSync())).toBeLessThanOrEqual(1e-4);
    // The merge changed the weights: the merged model is not the base model.
    expect(maxAbsDiff(mergedLogits.dataSync(), baseLogits.dataSync())).toBeGreaterThan(1e-4);
    for (const tensor of [mergedLogits, adaptedLogits, baseLogits]) tensor.dispose();
    for (const model of [merged, adapted, base]) model.dispose();
  });

  it('eval reports loss and perplexity', async () => {
    const result = await cli(['eval', '--model', modelDir, '--adapter', adapterDir, '--data', dataFile, '--max-seq-length', '64', '--json']);
    expect(result.code, describeResult(result)).toBe(0);
    const report = JSON.parse(result.stdout) as { mean_loss: number; perplexity: number; examples: Array<{ index: number; loss: number; tokens: number }> };
    expect(Object.keys(report).sort()).toEqual(['examples', 'mean_loss', 'perplexity']);
    expect(report.examples.map((example) => example.index)).toEqual(FACTS.map((_, i) => i));
    expect(Object.keys(report.examples[0]).sort()).toEqual(['index', 'loss', 'tokens']);
    expect(report.perplexity).toBeCloseTo(Math.exp(report.mean_loss), 9);
    // mean_loss is the mean over all scored tokens.
    const tokens = report.examples.reduce((sum, example) => sum + example.tokens, 0);
    const weighted = report.examples.reduce((sum, example) => sum + example.loss * example.tokens, 0);
    expect(report.mean_loss).toBeCloseTo(weighted / tokens, 9);

    // The first example's loss, recomputed from the logits of base + adapter.
    const scratch = path.join(root, 'eval-scratch');
    const imported = await importDataset(dataFile, { appDataDir: scratch });
    const first = (await readNormalized(imported.storedPath).next()).value as NormalizedRecord;
    const encoded = encodeRecord(first, await loadTokenizer(modelDir), { maxSeqLength: 64 });
    if (!encoded.ok) throw new Error(encoded.message);
    const model = loadModel(modelDir).model;
    loadAdapter(model, adapterDir);
    const logits = model.forward([encoded.example.input_ids]);
    const expected = meanCrossEntropy(logits.dataSync() as Float32Array, encoded.example.labels);
    logits.dispose();
    model.dispose();
    expect(report.examples[0].index).toBe(0);
    expect(report.examples[0].tokens).toBe(expected.tokens);
    expect(Math.abs(report.examples[0].loss - expected.loss)).toBeLessThanOrEqual(1e-4);

    // Five steps on this data already lower its loss below the base model's.
    const baseline = await cli(['eval', '--model', modelDir, '--data', dataFile, '--max-seq-length', '64', '--json']);
    expect(baseline.code, describeResult(baseline)).toBe(0);
    expect(report.mean_loss).toBeLessThan(JSON.parse(baseline.stdout).mean_loss);
  });
});

/** Mean cross-entropy of next-token targets `labels[t + 1]` (not -100) under `logits [seq, vocab]`. */
function meanCrossEntropy(logits: Float32Array, labels: number[]): { loss: number; tokens: number } {
  let total = 0;
  let tokens = 0;
  for (let t = 0; t + 1 < labels.length; t++) {
    const target = labels[t + 1];
    if (target === -100) continue;
    const row = logits.subarray(t * TINY_VOCAB_SIZE, (t + 1) * TINY_VOCAB_SIZE);
    let max = -Infinity;
    for (const value of row) max = Math.max(max, value);
    let sum = 0;
    for (const value of row) sum += Math.exp(value - max);
    total += max + Math.log(sum) - row[target];
    tokens++;
  }
  return { loss: total / tokens, tokens };
}

describe('generate', () => {
  it('greedy decoding is deterministic', async () => {
    const args = ['generate', '--model', modelDir, '--prompt-ids', '1,2,3', '--max-new-tokens', '5', '--json'];
    const first = await cli(args);
    const second = await cli(args);
    expect(first.code, describeResult(first)).toBe(0);
    expect(second.stdout).toBe(first.stdout);

    const output = JSON.parse(first.stdout) as { prompt_ids: number[]; token_ids: number[]; finish_reason: string };
    expect(output.prompt_ids).toEqual([1, 2, 3]);
    const eos = output.token_ids.indexOf(TINY_EOS_TOKEN_ID);
    if (eos >= 0) expect(eos).toBe(output.token_ids.length - 1);
    else expect(output.token_ids).toHaveLength(5);
    expect(output.token_ids.every((id) => Number.isInteger(id) && id >= 0 && id < TINY_VOCAB_SIZE)).toBe(true);

    // The first greedy token is the argmax of the last position's logits.
    const model = loadModel(modelDir).model;
    const logits = model.forward([[1, 2, 3]]);
    const last = (logits.dataSync() as Float32Array).subarray(2 * TINY_VOCAB_SIZE, 3 * TINY_VOCAB_SIZE);
    expect(output.token_ids[0]).toBe(last.indexOf(Math.max(...last)));
    logits.dispose();
    model.dispose();
  });

  it('sampling with a seed is repeatable', async () => {
    const args = ['generate', '--model', modelDir, '--prompt-ids', '1,2,3', '--max-new-tokens', '5', '--temperature', '0.8', '--seed', '1', '--json'];
    const first = await cli(args);
    const second = await cli(args);
    expect(first.code, describeResult(first)).toBe(0);
    expect(second.code, describeResult(second)).toBe(0);
    const firstIds = JSON.parse(first.stdout).token_ids as number[];
    expect(JSON.parse(second.stdout).token_ids).toEqual(firstIds);
    expect(firstIds.length).toBeGreaterThan(0);
    expect(firstIds.length).toBeLessThanOrEqual(5);
  });
});

describe('bad input', () => {
  /** Runs the CLI and returns the lines it wrote to stderr, after checking it failed. */
  async function failingRun(args: string[]): Promise<{ code: number | null; lines: string[] }> {
    const result = await cli(args);
    expect(result.code, describeResult(result)).not.toBe(0);
    expect(result.code, describeResult(result)).not.toBeNull();
    return { code: result.code, lines: result.stderr.trim().split('\n') };
  }

  it('--lr abc is rejected', async () => {
    const { code, lines } = await failingRun(['train', '--model', modelDir, '--data', dataFile, '--lr', 'abc']);
    expect(code).toBe(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('--lr');
    expect(lines[0]).toContain('"abc"');
  });

  it('--batch-size 0 is rejected', async () => {
    const { code, lines } = await failingRun(['train', '--model', modelDir, '--data', dataFile, '--batch-size', '0']);
    expect(code).toBe(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('--batch-size');
    expect(lines[0]).toContain('"0"');
  });

  it('missing --model is rejected', async () => {
    const { lines } = await failingRun(['train', '--data', dataFile]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('--model');
  });

  /** Writes a copy of the model whose index names two shards, of which only the first exists. */
  function writeShardedModel(name: string): string {
    const sharded = path.join(root, name);
    fs.mkdirSync(sharded, { recursive: true });
    fs.copyFileSync(path.join(modelDir, 'config.json'), path.join(sharded, 'config.json'));
    fs.copyFileSync(path.join(modelDir, 'model.safetensors'), path.join(sharded, 'model-00001-of-00002.safetensors'));
    const names = readSafetensorsNames(path.join(modelDir, 'model.safetensors'));
    const weightMap = Object.fromEntries(names.map((tensor, i) => [tensor, i % 2 === 0 ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors']));
    fs.writeFileSync(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    return sharded;
  }

  it('missing weight shard is named', async () => {
    const { lines } = await failingRun(['train', '--model', writeShardedModel('sharded'), '--data', dataFile]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('model-00002-of-00002.safetensors');
  });

  it('missing weight shard has code MODEL_FILES_MISSING', async () => {
    const { lines } = await failingRun(['train', '--model', writeShardedModel('sharded-code'), '--data', dataFile]);
    expect(lines[0]).toMatch(/^lora-studio: MODEL_FILES_MISSING: /);
  });

  it('empty dataset file is named', async () => {
    const empty = path.join(root, 'empty.jsonl');
    fs.writeFileSync(empty, '');
    const { lines } = await failingRun(['train', '--model', modelDir, '--data', empty, '--max-steps', '1']);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('DATASET_EMPTY');
    expect(lines[0]).toContain('empty.jsonl');
  });

  it('unknown command is named', async () => {
    const { code, lines } = await failingRun(['frobnicate']);
    expect(code).toBe(2);
    expect(lines[0]).toBe('Unknown command "frobnicate".');
  });
});

function readSafetensorsNames(file: string): string[] {
  const bytes = fs.readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  return Object.keys(JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'))).filter((key) => key !== '__metadata__');
}
