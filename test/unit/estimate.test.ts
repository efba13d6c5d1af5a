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
  it('grows with the batch', () => {
    const info = inspectModel(modelDir('llama-gqa-untied'));
    const small = estimateTraining(info, config('llama-gqa-untied', { batchSize: 2 }));
    const large = estimateTraining(info, config('llama-gqa-untied', { batchSize: 8 }));
    expect(large.memory.activationsBytes).toBeGreaterThan(3 * small.memory.activationsBytes);
    expect(large.memory.weightsBytes).toBe(small.memory.weightsBytes);
  });

  it('shrinks with checkpointing on a deep model, and never grows with it', () => {
    // SmolLM-135M's shape: 30 blocks, where keeping one block's input instead of its activations matters.
    const deep = { ...inspectModel(modelDir('llama-gqa-untied')), hiddenSize: 576, numLayers: 30, numHeads: 9, numKeyValueHeads: 3, intermediateSize: 1536, vocabSize: 49152 };
    const plain = estimateTraining(deep, config('llama-gqa-untied', { batchSize: 4, maxSeqLength: 256 }));
    const checkpointed = estimateTraining(deep, config('llama-gqa-untied', { batchSize: 4, maxSeqLength: 256, gradientCheckpointing: true }));
    expect(checkpointed.memory.activationsBytes).toBeLessThan(plain.memory.activationsBytes / 3);

    // Two blocks: recomputing one holds about what keeping both does.
    const shallow = inspectModel(modelDir('llama-gqa-untied'));
    const shallowPlain = estimateTraining(shallow, config('llama-gqa-untied', { batchSize: 8 }));
    const shallowCheckpointed = estimateTraining(shallow, config('llama-gqa-untied', { batchSize: 8, gradientCheckpointing: true }));
    expect(shallowCheckpointed.memory.activationsBytes).toBeLessThanOrEqual(shallowPlain.memory.activationsBytes);
  });

  it('qlora weights are about 0.52 bytes per linear parameter', () => {
    const info = inspectModel(modelDir('mistral-tiny'));
    const fp32 = estimateTraining(info, config('mistral-tiny'));
    const nf4 = estimateTraining(info, config('mistral-tiny', { method: 'qlora', quant: { quantType: 'nf4', blocksize: 64, doubleQuant: true } }));
    const linear = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 160);
    expect(fp32.memory.weightsBytes - nf4.memory.weightsBytes).toBeCloseTo(linear * (4 - (0.5 + 1 / 64 + 4 / (64 * 256))), 3);
  });
});
