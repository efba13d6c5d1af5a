import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { loadAdapter } from '../../src/engine/lora/adapter';
import { readSafetensorsHeader, readTensorAsFloat32 } from '../../src/engine/models/safetensors';
import { loadModel } from '../../src/engine/models';
import { Trainer } from '../../src/engine/train/trainer';
import { adapterTensors } from '../../src/engine/lora/adapter';
import { DEFAULT_TRAIN_CONFIG } from '../../src/shared/train-config';
import { FIXTURES, FIXTURE_MODELS, adapterDir, maxAbsDiff, modelDir, readJson } from '../helpers/fixtures';

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});

describe.each(FIXTURE_MODELS)('%s trainer', (name) => {
  it('reproduces the PyTorch loss curve and final adapter', () => {
    const fixture = readJson(path.join(FIXTURES, 'train', `${name}.fixture10.json`));
    const ids: number[][] = readJson(path.join(FIXTURES, 'inputs', 'train_fixed.json')).input_ids;
    const { model } = loadModel(modelDir(name));
    const adapter = loadAdapter(model, adapterDir(name));

    const trainer = new Trainer({
      model,
      train: ids.map((row) => ({ input_ids: row, labels: row })),
      padTokenId: 0,
      settings: {
        ...DEFAULT_TRAIN_CONFIG,
        lora: { ...adapter.settings, loraDropout: 0 },
        learningRate: 1e-2,
        weightDecay: 0,
        schedule: 'constant',
        warmupSteps: 0,
        maxGradNorm: 0,
        batchSize: 4,
        gradientAccumulationSteps: 1,
        maxSteps: 10,
      },
    });
    for (let i = 0; i < 10; i++) {
      const result = trainer.trainStep();
      expect(Math.abs(result.loss - fixture.steps[i].loss)).toBeLessThanOrEqual(1e-4);
      expect(Math.abs(result.gradNorm - fixture.steps[i].lora_grad_norm)).toBeLessThanOrEqual(1e-4 * Math.max(1, fixture.steps[i].lora_grad_norm));
    }

    const expected = readSafetensorsHeader(path.join(FIXTURES, 'train', `${name}-lora-after10`, 'adapter_model.safetensors'));
    const actual = adapterTensors(model);
    expect(Object.keys(actual).sort()).toEqual([...expected.tensors.keys()].sort());
    for (const key of expected.tensors.keys()) {
      expect(maxAbsDiff(actual[key].data, readTensorAsFloat32(expected, key))).toBeLessThanOrEqual(1e-4);
    }
    trainer.dispose();
    model.dispose();
  });
});

describe('trainer bookkeeping', () => {
  it('tensor count is stable between step 10 and step 100', () => {
    const ids: number[][] = readJson(path.join(FIXTURES, 'inputs', 'train_fixed.json')).input_ids;
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    loadAdapter(model, adapterDir('llama-gqa-untied'));
    const trainer = new Trainer({
      model,
      train: ids.map((row) => ({ input_ids: row.slice(0, 8), labels: row.slice(0, 8) })),
      padTokenId: 0,
      settings: { ...DEFAULT_TRAIN_CONFIG, lora: { ...DEFAULT_TRAIN_CONFIG.lora, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0.1 }, batchSize: 2, gradientAccumulationSteps: 2, maxSteps: 100, learningRate: 1e-3 },
    });
    for (let i = 0; i < 10; i++) trainer.trainStep();
    const atTen = tf.memory().numTensors;
    for (let i = 10; i < 100; i++) trainer.trainStep();
    expect(tf.memory().numTensors).toBe(atTen);
    trainer.dispose();
    model.dispose();
  });
});
