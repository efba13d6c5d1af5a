import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioError } from '../../src/shared/errors';
import { selectBackend } from '../../src/engine/backend';
import { applyLora, countParameters, formatTrainableParameters, loraVariables, matchesTarget, mergeLora, targetableModuleNames } from '../../src/engine/lora';
import { loadAdapter, writeAdapterFiles } from '../../src/engine/lora/adapter';
import { batchLoss, loadModel } from '../../src/engine/models';
import { readSafetensorsHeader, readTensorAsFloat32, writeSafetensors } from '../../src/engine/models/safetensors';
import { checkpointTensors } from '../../src/engine/models/transformer';
import { AdamW } from '../../src/engine/train/optimizer';
import { DEFAULT_TRAIN_CONFIG } from '../../src/shared/train-config';
import { FIXTURES, FIXTURE_MODELS, adapterDir, maxAbsDiff, modelDir, readJson } from '../helpers/fixtures';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-test-'));
const ids = [[5, 17, 42, 99, 3, 250, 12, 7]];

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function logitsOf(model: ReturnType<typeof loadModel>['model']): Float32Array {
  const logits = model.forward(ids);
  const values = logits.dataSync() as Float32Array;
  logits.dispose();
  return values;
}

function expectStudioError(action: () => unknown, code: string, fragment: string): void {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(StudioError);
    expect((error as StudioError).code).toBe(code);
    expect((error as StudioError).message).toContain(fragment);
    return;
  }
  throw new Error(`expected ${code}`);
}

describe('target matching', () => {
  it('follows PEFT suffix rules', () => {
    expect(matchesTarget('model.layers.0.self_attn.q_proj', ['q_proj'])).toBe(true);
    expect(matchesTarget('model.layers.0.self_attn.q_proj', ['self_attn.q_proj'])).toBe(true);
    expect(matchesTarget('model.layers.0.self_attn.q_proj', ['_proj'])).toBe(false);
    expect(matchesTarget('transformer.h.0.mlp.c_proj', ['attn.c_proj'])).toBe(false);
    expect(matchesTarget('lm_head', 'all-linear')).toBe(false);
    expect(matchesTarget('model.layers.1.mlp.down_proj', 'all-linear')).toBe(true);
  });

  it('lists GPT-2 module names with their parent', () => {
    const { model } = loadModel(modelDir('gpt2-tiny'));
    expect(targetableModuleNames(model)).toEqual(['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj']);
    model.dispose();
  });
});

describe.each(FIXTURE_MODELS)('%s LoRA', (name) => {
  it('with B = 0 equals the base model', () => {
    const { model } = loadModel(modelDir(name));
    const base = logitsOf(model);
    applyLora(model, { ...DEFAULT_TRAIN_CONFIG.lora, targetModules: 'all-linear', r: 4 }, 7);
    expect(loraVariables(model).length).toBeGreaterThan(0);
    expect(maxAbsDiff(logitsOf(model), base)).toBe(0);
    model.dispose();
  });

  it('merge equals the unmerged adapted model', () => {
    const { model } = loadModel(modelDir(name));
    loadAdapter(model, adapterDir(name));
    const adapted = logitsOf(model);
    mergeLora(model);
    expect(loraVariables(model)).toHaveLength(0);
    expect(maxAbsDiff(logitsOf(model), adapted)).toBeLessThanOrEqual(1e-5);
    model.dispose();
  });

  it('merge reproduces PEFT merged weights', () => {
    const { model } = loadModel(modelDir(name));
    loadAdapter(model, adapterDir(name));
    mergeLora(model);
    const ours = checkpointTensors(model);
    const merged = readSafetensorsHeader(path.join(FIXTURES, 'merged', `${name}-merged`, 'model.safetensors'));
    for (const key of merged.tensors.keys()) {
      if (/\.attn\.(masked_)?bias$/.test(key)) continue;
      expect(ours[key], key).toBeDefined();
      expect(maxAbsDiff(ours[key].data, readTensorAsFloat32(merged, key)), key).toBeLessThanOrEqual(1e-5);
    }
    model.dispose();
  });
});

describe('adapter files', () => {
  it('reports PEFT parameter counts', () => {
    const fixture = readJson(path.join(FIXTURES, 'train', 'llama-gqa-untied.fixture10.json'));
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    loadAdapter(model, adapterDir('llama-gqa-untied'));
    const counts = countParameters(model);
    expect(counts.trainable).toBe(fixture.trainable_parameters);
    expect(counts.total).toBe(fixture.total_parameters);
    expect(formatTrainableParameters(counts)).toBe(`trainable params: 7,168 || all params: 134,464 || trainable%: ${((100 * 7168) / 134464).toFixed(4)}`);
    model.dispose();
  });

  it('written adapter loads back with equal logits', () => {
    const { model } = loadModel(modelDir('qwen2-tiny'));
    const adapter = loadAdapter(model, adapterDir('qwen2-tiny'));
    const expected = logitsOf(model);
    const out = path.join(scratch, 'qwen-copy');
    fs.mkdirSync(out);
    writeAdapterFiles(model, adapter.settings, out, 'qwen2-tiny');
    const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 8, lora_alpha: 16, bias: 'none' });
    const fresh = loadModel(modelDir('qwen2-tiny')).model;
    loadAdapter(fresh, out);
    expect(maxAbsDiff(logitsOf(fresh), expected)).toBe(0);
    model.dispose();
    fresh.dispose();
  });

  it('rejects an adapter for another model', () => {
    const { model } = loadModel(modelDir('gpt2-tiny'));
    expectStudioError(() => loadAdapter(model, adapterDir('llama-gqa-untied')), 'ADAPTER_MISMATCH', 'match no linear layer');
    model.dispose();
  });

  it('rejects an adapter missing some targeted layers', () => {
    const partial = path.join(scratch, 'partial');
    fs.mkdirSync(partial);
    fs.copyFileSync(path.join(adapterDir('llama-gqa-untied'), 'adapter_config.json'), path.join(partial, 'adapter_config.json'));
    const header = readSafetensorsHeader(path.join(adapterDir('llama-gqa-untied'), 'adapter_model.safetensors'));
    const kept = Object.fromEntries([...header.tensors.entries()].filter(([key]) => !key.includes('layers.1.self_attn.v_proj')).map(([key, info]) => [key, { dtype: 'F32' as const, shape: info.shape, data: readTensorAsFloat32(header, key) }]));
    writeSafetensors(path.join(partial, 'adapter_model.safetensors'), kept);
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    expectStudioError(() => loadAdapter(model, partial), 'ADAPTER_MISMATCH', 'model.layers.1.self_attn.v_proj');
    model.dispose();
  });

  it('rejects a shape mismatch', () => {
    const bad = path.join(scratch, 'bad-shape');
    fs.mkdirSync(bad);
    fs.copyFileSync(path.join(adapterDir('mistral-tiny'), 'adapter_config.json'), path.join(bad, 'adapter_config.json'));
    const header = readSafetensorsHeader(path.join(adapterDir('mistral-tiny'), 'adapter_model.safetensors'));
    const tensors = Object.fromEntries([...header.tensors.entries()].map(([key, info]) => [key, { dtype: 'F32' as const, shape: info.shape, data: readTensorAsFloat32(header, key) }]));
    tensors['base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight'] = { dtype: 'F32', shape: [64, 8], data: new Float32Array(512) };
    writeSafetensors(path.join(bad, 'adapter_model.safetensors'), tensors);
    const { model } = loadModel(modelDir('mistral-tiny'));
    expectStudioError(() => loadAdapter(model, bad), 'SHAPE_MISMATCH', 'model.layers.0.self_attn.k_proj');
    model.dispose();
  });
});

describe('gradients', () => {
  it('flow only to LoRA variables', () => {
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    loadAdapter(model, adapterDir('llama-gqa-untied'));
    const baseBefore = checkpointTensors(model);
    const variables = loraVariables(model);
    const before = variables.map((v) => Array.from(v.dataSync()));
    const optimizer = new AdamW({ beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01 });
    const { value, grads } = tf.variableGrads(() => batchLoss(model, { inputIds: ids, labels: ids }), variables);
    expect(Object.keys(grads).sort()).toEqual(variables.map((v) => v.name).sort());
    optimizer.apply(variables, new Map(Object.entries(grads)), 1e-2);
    for (const g of Object.values(grads)) g.dispose();
    value.dispose();

    variables.forEach((v, i) => expect(maxAbsDiff(v.dataSync(), before[i])).toBeGreaterThan(0));
    const baseAfter = checkpointTensors(model);
    for (const key of Object.keys(baseBefore)) expect(maxAbsDiff(baseAfter[key].data, baseBefore[key].data), key).toBe(0);
    optimizer.dispose();
    model.dispose();
  });

  it('forward and backward leave no tensors behind', () => {
    const { model } = loadModel(modelDir('gpt2-tiny'));
    loadAdapter(model, adapterDir('gpt2-tiny'));
    const variables = loraVariables(model);
    const step = () => {
      const { value, grads } = tf.variableGrads(() => batchLoss(model, { inputIds: ids, labels: ids }), variables);
      value.dispose();
      for (const g of Object.values(grads)) g.dispose();
    };
    step();
    const count = tf.memory().numTensors;
    step();
    step();
    expect(tf.memory().numTensors).toBe(count);
    model.dispose();
  });
});
