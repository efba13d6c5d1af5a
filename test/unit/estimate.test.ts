import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { estimateTraining } from '../../src/engine/estimate';
import { applyLora, countParameters } from '../../src/engine/lora';
import { loadModel } from '../../src/engine/models';
import { inspectModel } from '../../src/engine/models/inspect';
import { DEFAULT_TRAIN_CONFIG, type TrainConfig } from '../../src/shared/train-config';
import { FIXTURE_MODELS, modelDir } from '../helpers/fixtures';

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});

function config(name: string, overrides: Partial<TrainConfig> = {}): TrainConfig {
  return { ...DEFAULT_TRAIN_CONFIG, modelPath: modelDir(name as never), maxSeqLength: 64, batchSize: 4, ...overrides };
}

describe.each(FIXTURE_MODELS)('%s estimate', (name) => {
  it('counts the trainable parameters LoRA adds', () => {
    const info = inspectModel(modelDir(name));
    const settings = { ...DEFAULT_TRAIN_CONFIG.lora, targetModules: 'all-linear' as const, r: 4 };
    const estimate = estimateTraining(info, config(name, { lora: settings }));
    const { model } = loadModel(modelDir(name));
    applyLora(model, settings, 1);
    expect(estimate.trainableParameters).toBe(countParameters(model).trainable);
    expect(estimate.totalParameters).toBe(countParameters(model).total);
    model.dispose();
  });
});

describe('memory estimate', () => {
  it('grows with the batch and shrinks with checkpointing', () => {
    const info = inspectModel(modelDir('llama-gqa-untied'));
    const small = estimateTraining(info, config('llama-gqa-untied', { batchSize: 2 }));
    const large = estimateTraining(info, config('llama-gqa-untied', { batchSize: 8 }));
    const checkpointed = estimateTraining(info, config('llama-gqa-untied', { batchSize: 8, gradientCheckpointing: true }));
    expect(large.memory.activationsBytes).toBeGreaterThan(3 * small.memory.activationsBytes);
    expect(checkpointed.memory.activationsBytes).toBeLessThan(large.memory.activationsBytes);
    expect(large.memory.weightsBytes).toBe(small.memory.weightsBytes);
  });

  it('qlora weights are about 0.52 bytes per linear parameter', () => {
    const info = inspectModel(modelDir('mistral-tiny'));
    const fp32 = estimateTraining(info, config('mistral-tiny'));
    const nf4 = estimateTraining(info, config('mistral-tiny', { method: 'qlora', quant: { quantType: 'nf4', blocksize: 64, doubleQuant: true } }));
    const linear = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 160);
    expect(fp32.memory.weightsBytes - nf4.memory.weightsBytes).toBeCloseTo(linear * (4 - (0.5 + 1 / 64 + 4 / (64 * 256))), 3);
  });
});
