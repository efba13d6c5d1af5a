import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioError } from '../../src/shared/errors';
import { selectBackend } from '../../src/engine/backend';
import { generate, sampleTopP } from '../../src/engine/generate';
import { loadModel } from '../../src/engine/models';
import { parseModelConfig } from '../../src/engine/models/config';
import { inspectModel } from '../../src/engine/models/inspect';
import { applyRope, ropeInverseFrequencies, ropeTables } from '../../src/engine/models/rope';
import { SeededRandom } from '../../src/engine/train/random';
import { maxAbsDiff, modelDir } from '../helpers/fixtures';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'models-test-'));

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function copyModel(name: string, target: string): string {
  const dir = path.join(scratch, target);
  fs.cpSync(modelDir(name as never), dir, { recursive: true });
  return dir;
}

function catchStudioError(action: () => unknown): StudioError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(StudioError);
    return error as StudioError;
  }
  throw new Error('expected a StudioError');
}

describe('model folder errors', () => {
  it('unsupported architecture lists the supported ones', () => {
    const dir = copyModel('llama-gqa-untied', 'phi');
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    config.architectures = ['PhiForCausalLM'];
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    const error = catchStudioError(() => loadModel(dir));
    expect(error.code).toBe('MODEL_UNSUPPORTED');
    expect(error.message).toContain('"PhiForCausalLM"');
    expect(error.hint).toContain('GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM');
    expect(inspectModel(dir).supported).toBe(false);
  });

  it('pickle-only folder explains the conversion', () => {
    const dir = path.join(scratch, 'pickle');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(modelDir('gpt2-tiny'), 'config.json'), path.join(dir, 'config.json'));
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'not loaded');
    const error = catchStudioError(() => loadModel(dir));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('pytorch_model.bin');
    expect(error.message).toContain('unpickling runs arbitrary code');
    expect(error.hint).toContain('safe_serialization=True');
  });

  it('missing shard is named', () => {
    const dir = copyModel('qwen2-tiny', 'sharded');
    fs.renameSync(path.join(dir, 'model.safetensors'), path.join(dir, 'model-00001-of-00002.safetensors'));
    const shard = fs.readFileSync(path.join(dir, 'model-00001-of-00002.safetensors'));
    const header = JSON.parse(shard.subarray(8, 8 + Number(shard.readBigUInt64LE(0))).toString('utf8'));
    const weightMap = Object.fromEntries(Object.keys(header).filter((k) => k !== '__metadata__').map((k, i) => [k, i % 2 ? 'model-00002-of-00002.safetensors' : 'model-00001-of-00002.safetensors']));
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const error = catchStudioError(() => loadModel(dir));
    expect(error.code).toBe('MODEL_FILES_MISSING');
    expect(error.message).toContain('missing 1 of 2 weight shards: model-00002-of-00002.safetensors');
  });

  it('sharded folder loads like the single file', () => {
    const dir = copyModel('mistral-tiny', 'sharded-ok');
    const file = path.join(dir, 'model.safetensors');
    const headerLength = Number(fs.readFileSync(file).readBigUInt64LE(0));
    const header = JSON.parse(fs.readFileSync(file).subarray(8, 8 + headerLength).toString('utf8'));
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    fs.renameSync(file, path.join(dir, 'model-00001-of-00001.safetensors'));
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: Object.fromEntries(names.map((n) => [n, 'model-00001-of-00001.safetensors'])) }));
    const sharded = loadModel(dir).model;
    const single = loadModel(modelDir('mistral-tiny')).model;
    const a = sharded.forward([[1, 2, 3]]);
    const b = single.forward([[1, 2, 3]]);
    expect(maxAbsDiff(a.dataSync(), b.dataSync())).toBe(0);
    tf.dispose([a, b]);
    sharded.dispose();
    single.dispose();
  });

  it('missing config names the folder', () => {
    const error = catchStudioError(() => loadModel(path.join(scratch, 'nothing-here')));
    expect(error.code).toBe('MODEL_FILES_MISSING');
    expect(error.message).toContain('nothing-here');
  });

  it('weight with the wrong shape is named', () => {
    const dir = copyModel('llama-gqa-untied', 'wrong-shape');
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    config.intermediate_size = 128;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    const error = catchStudioError(() => loadModel(dir));
    expect(error.code).toBe('SHAPE_MISMATCH');
    expect(error.message).toContain('model.layers.0.mlp.gate_proj.weight');
  });

  it('inspect reports size, vocabulary and targets', () => {
    const info = inspectModel(modelDir('gpt2-tiny'));
    expect(info).toMatchObject({ architecture: 'GPT2LMHeadModel', supported: true, vocabSize: 320, contextLength: 256, dtype: 'F32', numLayers: 2 });
    expect(info.linearModules).toEqual(['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj']);
    const { model } = loadModel(modelDir('gpt2-tiny'));
    expect(info.parameterCount).toBe(model.parameterCount());
    model.dispose();
  });
});

describe('rope', () => {
  it('matches the direct rotation formula', () => {
    const headDim = 8;
    const theta = 10000;
    const inverse = ropeInverseFrequencies(headDim, theta);
    const { cos, sin } = ropeTables(5, headDim, inverse);
    const x = Array.from({ length: 5 * headDim }, (_, i) => Math.sin(i + 1));
    const rotated = applyRope(tf.tensor4d(x, [1, 1, 5, headDim]), tf.tensor2d(cos, [5, headDim]), tf.tensor2d(sin, [5, headDim])).dataSync();
    const half = headDim / 2;
    for (let p = 0; p < 5; p++) {
      for (let i = 0; i < half; i++) {
        const angle = p / theta ** ((2 * i) / headDim);
        const a = x[p * headDim + i];
        const b = x[p * headDim + i + half];
        expect(rotated[p * headDim + i]).toBeCloseTo(a * Math.cos(angle) - b * Math.sin(angle), 5);
        expect(rotated[p * headDim + i + half]).toBeCloseTo(b * Math.cos(angle) + a * Math.sin(angle), 5);
      }
    }
  });

  it('linear scaling divides the frequencies', () => {
    const plain = ropeInverseFrequencies(16, 10000);
    const scaled = ropeInverseFrequencies(16, 10000, { type: 'linear', factor: 4 });
    scaled.forEach((f, i) => expect(f).toBeCloseTo(plain[i] / 4, 10));
  });

  it('llama3 scaling keeps high and divides low frequencies', () => {
    const scaling = { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const plain = ropeInverseFrequencies(128, 500000);
    const scaled = ropeInverseFrequencies(128, 500000, scaling);
    expect(scaled[0]).toBe(plain[0]); // wavelength 2π < 8192/4: unchanged
    expect(scaled[63]).toBeCloseTo(plain[63] / 8, 12); // wavelength > 8192: divided by the factor
    const config = parseModelConfig({ architectures: ['LlamaForCausalLM'], hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 1, intermediate_size: 128, vocab_size: 10, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }, 'config.json');
    expect(config.ropeScaling).toEqual(scaling);
  });
});

describe('attention mask', () => {
  it('left padding leaves the real tokens unchanged', () => {
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    const plain = model.forward([[10, 20, 30, 40]]);
    const padded = model.forward([[0, 0, 10, 20, 30, 40]], { attentionMask: [[0, 0, 1, 1, 1, 1]], positionIds: [[0, 0, 0, 1, 2, 3]] });
    const real = tf.slice(padded, [0, 2, 0], [1, 4, -1]);
    expect(maxAbsDiff(real.dataSync(), plain.dataSync())).toBeLessThanOrEqual(1e-5);
    tf.dispose([plain, padded, real]);
    model.dispose();
  });
});

describe('generation', () => {
  it('kv cache gives the same greedy tokens as full recomputation', () => {
    for (const name of ['gpt2-tiny', 'qwen2-tiny'] as const) {
      const { model } = loadModel(modelDir(name));
      const prompt = [3, 14, 15, 92];
      const cached = generate(model, prompt, { maxNewTokens: 8 }).tokenIds;
      const sequence = [...prompt];
      for (let i = 0; i < 8; i++) {
        const logits = model.forward([sequence]);
        const last = tf.tidy(() => tf.argMax(tf.reshape(tf.slice(logits, [0, sequence.length - 1, 0], [1, 1, -1]), [-1])));
        sequence.push(last.dataSync()[0]);
        tf.dispose([logits, last]);
      }
      expect(cached).toEqual(sequence.slice(prompt.length));
      model.dispose();
    }
  });

  it('stops at EOS and is reproducible with a seed', () => {
    const { model } = loadModel(modelDir('mistral-tiny'));
    const greedy = generate(model, [1, 2, 3], { maxNewTokens: 6 }).tokenIds;
    const stopped = generate(model, [1, 2, 3], { maxNewTokens: 6, eosTokenIds: [greedy[2]] });
    expect(stopped.finishReason).toBe('eos');
    expect(stopped.tokenIds).toEqual(greedy.slice(0, greedy.indexOf(greedy[2])));
    const a = generate(model, [1, 2, 3], { maxNewTokens: 6, temperature: 0.9, topP: 0.9, seed: 11 }).tokenIds;
    const b = generate(model, [1, 2, 3], { maxNewTokens: 6, temperature: 0.9, topP: 0.9, seed: 11 }).tokenIds;
    expect(a).toEqual(b);
    model.dispose();
  });

  it('top-p keeps only the nucleus', () => {
    const logits = Float32Array.from([10, 9.9, -5, -5, -5]);
    const random = new SeededRandom(3);
    for (let i = 0; i < 50; i++) expect([0, 1]).toContain(sampleTopP(logits, 1, 0.9, random));
  });
});
