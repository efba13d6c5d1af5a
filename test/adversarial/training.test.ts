/**
 * Data and settings that only fail once training starts: the run must stop with a StudioError
 * that names the value, never a tfjs exception, and must never train on out-of-range targets.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSafetensorsHeader } from '../../src/engine/models/safetensors';
import { runTraining, type RunHooks } from '../../src/engine/train/run';
import { importDataset } from '../../src/services/datasets';
import type { TrainConfig } from '../../src/shared/train-config';
import { FIXTURE_VOCAB_SIZE, catchStudioErrorAsync, copyModel, makeScratch, trainConfigFor, writeTokenRows } from '../helpers/adversarial';
import { modelDir } from '../helpers/fixtures';

const scratch = makeScratch('training');
const appDataDir = path.join(scratch, 'app');
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const hooks: RunHooks = {
  log() {},
  progress() {},
  metrics() {},
  checkpoint() {},
  checkpointRequested: () => 'continue',
  waitForResume: async () => 'cancel',
};

let runCounter = 0;

/** Imports `dataFile` and trains `config` on it in this process; resolves with the outcome. */
async function train(modelPath: string, dataFile: string, overrides: Partial<TrainConfig> = {}) {
  const dataset = await importDataset(dataFile, { appDataDir });
  const config = trainConfigFor(modelPath, {
    datasetPath: dataset.storedPath,
    backend: 'cpu',
    maxSteps: 2,
    batchSize: 2,
    maxSeqLength: 32,
    validationSplit: 0,
    evalSteps: 0,
    saveSteps: 0,
    lora: { r: 2, loraAlpha: 4, loraDropout: 0, targetModules: ['q_proj'], useRslora: false, initLoraWeights: 'kaiming' },
    ...overrides,
  });
  const runDir = path.join(scratch, 'runs', `run-${++runCounter}`);
  fs.mkdirSync(runDir, { recursive: true });
  return runTraining(config, runDir, hooks);
}

describe('targets outside the model', () => {
  // Without a tokenizer the run bounds ids by config.json's vocab_size, so out-of-range rows are
  // skipped with a reason (instead of a tfjs GatherV2 error) and DATASET_EMPTY names it.
  it('ids above vocab_size name the id and the vocabulary', async () => {
    const data = writeTokenRows(path.join(scratch, 'ids-above.jsonl'), 8, 12, FIXTURE_VOCAB_SIZE, (ids) => ({ input_ids: [...ids, 5000] }));
    const error = await catchStudioErrorAsync(() => train(modelDir('llama-gqa-untied'), data));
    expect(['DATASET_PARSE', 'DATASET_EMPTY']).toContain(error.code);
    expect(error.message).toContain('5000');
    expect(error.message).toContain(String(FIXTURE_VOCAB_SIZE));
  });

  // Labels are bounded like input ids, so a class the LM head does not have never reaches the
  // loss.
  it('labels above vocab_size are rejected', async () => {
    const data = writeTokenRows(path.join(scratch, 'labels-above.jsonl'), 8, 12, FIXTURE_VOCAB_SIZE, (ids) => ({ labels: [...ids.slice(0, -1), 5000] }));
    const error = await catchStudioErrorAsync(() => train(modelDir('llama-gqa-untied'), data));
    expect(error.message).toContain('5000');
  });

  it('fully masked rows are DATASET_EMPTY', async () => {
    const data = writeTokenRows(path.join(scratch, 'all-masked.jsonl'), 8, 12, FIXTURE_VOCAB_SIZE, (ids) => ({ labels: ids.map(() => -100) }));
    const error = await catchStudioErrorAsync(() => train(modelDir('llama-gqa-untied'), data));
    expect(error.code).toBe('DATASET_EMPTY');
    expect(error.hint).toContain('completion or assistant text');
  });

  it('unknown target module lists the choices', async () => {
    const data = writeTokenRows(path.join(scratch, 'targets.jsonl'), 8, 12);
    const error = await catchStudioErrorAsync(() =>
      train(modelDir('llama-gqa-untied'), data, { lora: { r: 2, loraAlpha: 4, loraDropout: 0, targetModules: ['nope'], useRslora: false, initLoraWeights: 'kaiming' } }),
    );
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('["nope"]');
    expect(error.hint).toContain('q_proj');
  });
});

describe('sequence length beyond the model', () => {
  // GPT-2 has learned positions for n_positions = 256 tokens; the run compares maxSeqLength
  // with it before training instead of failing in the position lookup.
  it('maxSeqLength above n_positions names both values', async () => {
    const data = writeTokenRows(path.join(scratch, 'long-rows.jsonl'), 4, 300);
    const error = await catchStudioErrorAsync(() => train(modelDir('gpt2-tiny'), data, { maxSeqLength: 512, lora: { r: 2, loraAlpha: 4, loraDropout: 0, targetModules: ['c_attn'], useRslora: false, initLoraWeights: 'kaiming' } }));
    expect(error.code).toBe('INVALID_ARGUMENT');
    expect(error.message).toContain('512');
    expect(error.message).toContain('256');
  });

  it('Llama rows longer than maxSeqLength are truncated', async () => {
    const data = writeTokenRows(path.join(scratch, 'llama-long.jsonl'), 4, 300);
    const outcome = await train(modelDir('llama-gqa-untied'), data, { maxSeqLength: 16 });
    expect(outcome.status).toBe('completed');
    expect(outcome.steps).toBe(2);
    expect(Number.isFinite(outcome.finalLoss)).toBe(true);
  });
});

describe('broken weights', () => {
  // The loss is NaN before the first update, so the weights (NaN/Inf in q_proj here) are the
  // cause; the error names the weight instead of suggesting a lower learning rate.
  it('NaN weights point at the model', async () => {
    const dir = copyModel(scratch, 'nan-weights', 'llama-gqa-untied');
    const file = path.join(dir, 'model.safetensors');
    const info = readSafetensorsHeader(file).tensors.get('model.layers.0.self_attn.q_proj.weight')!;
    const poison = Buffer.alloc(8);
    poison.writeFloatLE(Number.NaN, 0);
    poison.writeFloatLE(Number.POSITIVE_INFINITY, 4);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, poison, 0, 8, info.begin);
    fs.closeSync(fd);

    const data = writeTokenRows(path.join(scratch, 'nan-weights.jsonl'), 8, 12);
    const error = await catchStudioErrorAsync(() => train(dir, data));
    expect(error.code).toBe('NAN_LOSS');
    expect(`${error.message} ${error.hint}`).toMatch(/weight|model/i);
  });
});
