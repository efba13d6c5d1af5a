/**
 * Bad model folders, safetensors files and adapter folders: each must give a StudioError that
 * names the file and the value, never a raw exception or silently wrong numbers.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { loadAdapter } from '../../src/engine/lora/adapter';
import { batchLoss, loadModel, type LoadedModel } from '../../src/engine/models';
import { inspectModel } from '../../src/engine/models/inspect';
import { readSafetensorsHeader, writeSafetensors, type TensorToWrite } from '../../src/engine/models/safetensors';
import { catchStudioError, copyAdapter, copyModel, makeScratch, writeRawSafetensors } from '../helpers/adversarial';
import { adapterDir, modelDir } from '../helpers/fixtures';

const scratch = makeScratch('models');
const PROBE_IDS = [[1, 2, 3, 4, 5, 6, 7, 8]];

beforeAll(async () => {
  await selectBackend({ force: 'cpu' });
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function probeLoss(loaded: LoadedModel): number {
  const loss = tf.tidy(() => batchLoss(loaded.model, { inputIds: PROBE_IDS, labels: PROBE_IDS }));
  const value = loss.dataSync()[0];
  loss.dispose();
  return value;
}

describe('config.json values', () => {
  const cases: { name: string; edit: (config: Record<string, unknown>) => void; code: string; names: string[]; hint?: string }[] = [
    { name: 'hidden_size as string', edit: (c) => void (c.hidden_size = '64'), code: 'MODEL_FORMAT', names: ['hidden_size', '"64"'] },
    { name: 'hidden_size zero', edit: (c) => void (c.hidden_size = 0), code: 'MODEL_FORMAT', names: ['hidden_size', '0'] },
    { name: 'hidden_size negative', edit: (c) => void (c.hidden_size = -64), code: 'MODEL_FORMAT', names: ['hidden_size', '-64'] },
    { name: 'heads not dividing hidden size', edit: (c) => Object.assign(c, { num_attention_heads: 5, num_key_value_heads: 5 }), code: 'MODEL_FORMAT', names: ['hidden_size (64)', 'num_attention_heads (5)'] },
    { name: 'key/value heads zero', edit: (c) => void (c.num_key_value_heads = 0), code: 'MODEL_FORMAT', names: ['num_key_value_heads (0)'] },
    { name: 'vocab_size above the weights', edit: (c) => void (c.vocab_size = 1e9), code: 'SHAPE_MISMATCH', names: ['model.embed_tokens.weight', '1000000000'] },
    { name: 'vocab_size below the weights', edit: (c) => void (c.vocab_size = 100), code: 'SHAPE_MISMATCH', names: ['[320,64]', '[100,64]'] },
    { name: 'more layers than weights', edit: (c) => void (c.num_hidden_layers = 100), code: 'MODEL_FILES_MISSING', names: ['model.layers.2.'] },
    { name: 'intermediate_size zero', edit: (c) => void (c.intermediate_size = 0), code: 'MODEL_FORMAT', names: ['intermediate_size', '0'] },
    { name: 'unknown architecture object', edit: (c) => void (c.architectures = [{}]), code: 'MODEL_UNSUPPORTED', names: ['[object Object]'], hint: 'LlamaForCausalLM' },
    { name: 'rope_scaling as a string', edit: (c) => void (c.rope_scaling = 'linear'), code: 'MODEL_UNSUPPORTED', names: ['rope_scaling'] },
  ];

  for (const testCase of cases) {
    it(`load rejects ${testCase.name}`, () => {
      const dir = copyModel(scratch, `config-${testCase.name.replace(/\W+/g, '-')}`, 'llama-gqa-untied', testCase.edit);
      const error = catchStudioError(() => loadModel(dir));
      expect(error.code).toBe(testCase.code);
      for (const fragment of testCase.names) expect(error.message).toContain(fragment);
      if (testCase.hint) expect(error.hint).toContain(testCase.hint);
    });
  }

  it('inspect reports a bad value as unsupported', () => {
    const dir = copyModel(scratch, 'inspect-string-hidden', 'llama-gqa-untied', (c) => void (c.hidden_size = '64'));
    const info = inspectModel(dir);
    expect(info.supported).toBe(false);
    expect(info.unsupportedReason).toContain('"hidden_size" must be a positive number, got "64"');
  });

  it('config.json that is not JSON is MODEL_FORMAT', () => {
    const dir = copyModel(scratch, 'config-truncated', 'llama-gqa-untied');
    fs.writeFileSync(path.join(dir, 'config.json'), '{ "architectures": [');
    const error = catchStudioError(() => inspectModel(dir));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain(path.join(dir, 'config.json'));
  });

  // config.json must hold an object; `null` is a format error, not a TypeError.
  it('config.json holding null is MODEL_FORMAT', () => {
    const dir = copyModel(scratch, 'config-null', 'llama-gqa-untied');
    fs.writeFileSync(path.join(dir, 'config.json'), 'null');
    const error = catchStudioError(() => inspectModel(dir));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('config.json');
  });

  // rms_norm_eps and rope_theta must be positive when present; a negative epsilon would make
  // every logit NaN.
  it('negative rms_norm_eps is MODEL_FORMAT', () => {
    const dir = copyModel(scratch, 'config-negative-eps', 'llama-gqa-untied', (c) => void (c.rms_norm_eps = -1));
    const error = catchStudioError(() => loadModel(dir).model.dispose());
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('rms_norm_eps');
  });
});

describe('model folder paths', () => {
  it('path with spaces and unicode loads', () => {
    const dir = copyModel(scratch, 'mödel with spaces ✓', 'llama-gqa-untied');
    const loaded = loadModel(dir);
    try {
      expect(Number.isFinite(probeLoss(loaded))).toBe(true);
    } finally {
      loaded.model.dispose();
    }
  });

  it('file instead of folder is MODEL_FILES_MISSING', () => {
    const file = path.join(scratch, 'not-a-folder');
    fs.writeFileSync(file, 'x');
    const error = catchStudioError(() => inspectModel(file));
    expect(error.code).toBe('MODEL_FILES_MISSING');
    expect(error.message).toContain(file);
  });

  it('symlink loop is MODEL_FILES_MISSING', () => {
    const loop = path.join(scratch, 'loop');
    fs.symlinkSync(loop, loop);
    const error = catchStudioError(() => loadModel(loop));
    expect(error.code).toBe('MODEL_FILES_MISSING');
    expect(error.message).toContain(loop);
  });

  it('pickle-only folder explains the conversion', () => {
    const dir = copyModel(scratch, 'pickle-only', 'llama-gqa-untied');
    fs.renameSync(path.join(dir, 'model.safetensors'), path.join(dir, 'pytorch_model.bin'));
    const error = catchStudioError(() => loadModel(dir));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('pytorch_model.bin');
    expect(error.hint).toContain('safe_serialization=True');
  });

  // Opening a folder succeeds on Linux and only the read fails, so the weights path is checked
  // to be a file first.
  it('model.safetensors that is a folder is MODEL_FORMAT', () => {
    const dir = copyModel(scratch, 'weights-folder', 'llama-gqa-untied');
    fs.rmSync(path.join(dir, 'model.safetensors'));
    fs.mkdirSync(path.join(dir, 'model.safetensors'));
    const error = catchStudioError(() => inspectModel(dir));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('model.safetensors');
  });
});

describe('hostile safetensors headers', () => {
  it('header length of 2^63 is rejected before allocation', () => {
    const file = writeRawSafetensors(path.join(scratch, 'huge.safetensors'), {}, Buffer.alloc(0), 2n ** 63n);
    const error = catchStudioError(() => readSafetensorsHeader(file));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain(file);
    expect(error.message).toContain('104857600-byte limit');
  });

  it('huge header inside a model folder makes inspect unsupported', () => {
    const dir = copyModel(scratch, 'huge-header', 'llama-gqa-untied');
    writeRawSafetensors(path.join(dir, 'model.safetensors'), {}, Buffer.alloc(0), 2n ** 40n);
    const info = inspectModel(dir);
    expect(info.supported).toBe(false);
    expect(info.unsupportedReason).toContain('1099511627776 bytes');
  });

  it('negative data_offsets are rejected', () => {
    const file = writeRawSafetensors(path.join(scratch, 'negative.safetensors'), { x: { dtype: 'F32', shape: [2], data_offsets: [-8, 0] } }, Buffer.alloc(12));
    const error = catchStudioError(() => readSafetensorsHeader(file));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('tensor "x" has invalid data_offsets [-8,0]');
  });

  it('offsets past the end of the file are rejected', () => {
    const file = writeRawSafetensors(path.join(scratch, 'short.safetensors'), { x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, Buffer.alloc(8));
    const error = catchStudioError(() => readSafetensorsHeader(file));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('truncated file?');
  });

  it('shape product overflow is rejected', () => {
    const file = writeRawSafetensors(path.join(scratch, 'overflow.safetensors'), { x: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, Buffer.alloc(8));
    const error = catchStudioError(() => readSafetensorsHeader(file));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('tensor "x"');
  });

  it('__proto__ tensor name is rejected', () => {
    const file = path.join(scratch, 'proto.safetensors');
    const json = Buffer.from('{"__proto__":{}}');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    fs.writeFileSync(file, Buffer.concat([length, json]));
    const error = catchStudioError(() => readSafetensorsHeader(file));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('"__proto__"');
  });

  // Two tensors must not share bytes: the ranges are sorted by begin and each must end before
  // the next begins.
  it('overlapping data_offsets are rejected', () => {
    const header = {
      x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    };
    const file = writeRawSafetensors(path.join(scratch, 'overlap.safetensors'), header, Buffer.alloc(12));
    const error = catchStudioError(() => readSafetensorsHeader(file));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('overlap');
  });
});

describe('adapter folders', () => {
  let base: LoadedModel;
  let referenceLoss: number;

  beforeAll(() => {
    base = loadModel(modelDir('llama-gqa-untied'));
    loadAdapter(base.model, adapterDir('llama-gqa-untied'));
    referenceLoss = probeLoss(base);
  });
  afterAll(() => base.model.dispose());

  it('adapter of another architecture is ADAPTER_MISMATCH', () => {
    const error = catchStudioError(() => loadAdapter(base.model, adapterDir('gpt2-tiny')));
    expect(error.code).toBe('ADAPTER_MISMATCH');
    expect(error.message).toContain('transformer.h.0.attn.c_attn.lora_A.weight');
    expect(error.hint).toContain('base_model_name_or_path');
  });

  it('regex target_modules is MODEL_UNSUPPORTED', () => {
    const dir = copyAdapter(scratch, 'adapter-regex', 'llama-gqa-untied', (c) => void (c.target_modules = '.*q_proj'));
    const error = catchStudioError(() => loadAdapter(base.model, dir));
    expect(error.code).toBe('MODEL_UNSUPPORTED');
    expect(error.message).toContain('".*q_proj"');
  });

  it('adapter_model.bin only names the pickle file', () => {
    const dir = copyAdapter(scratch, 'adapter-bin', 'llama-gqa-untied');
    fs.renameSync(path.join(dir, 'adapter_model.safetensors'), path.join(dir, 'adapter_model.bin'));
    const error = catchStudioError(() => loadAdapter(base.model, dir));
    expect(error.code).toBe('MODEL_FILES_MISSING');
    expect(error.message).toContain('adapter_model.bin');
    expect(error.hint).toContain('safe_serialization=True');
  });

  it('config r=0 follows the tensor shapes', () => {
    const dir = copyAdapter(scratch, 'adapter-r0', 'llama-gqa-untied', (c) => void (c.r = 0));
    loadAdapter(base.model, dir);
    expect(probeLoss(base)).toBeCloseTo(referenceLoss, 6);
  });

  // adapter_config.json must hold an object; `null` is a format error, not a TypeError.
  it('adapter_config.json holding null is MODEL_FORMAT', () => {
    const dir = copyAdapter(scratch, 'adapter-null', 'llama-gqa-untied');
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), 'null');
    const error = catchStudioError(() => loadAdapter(base.model, dir));
    expect(error.code).toBe('MODEL_FORMAT');
    expect(error.message).toContain('adapter_config.json');
  });

  // Without lora_alpha the scale would be NaN; PEFT's LoraConfig default of 8 applies instead.
  it('missing lora_alpha keeps the logits finite', () => {
    const dir = copyAdapter(scratch, 'adapter-no-alpha', 'llama-gqa-untied', (c) => void delete c.lora_alpha);
    loadAdapter(base.model, dir);
    expect(Number.isFinite(probeLoss(base))).toBe(true);
  });

  // The scale is alpha / rank with rank = lora_A rows, so zero-row tensors are rejected rather
  // than giving an infinite scale.
  it('rank-0 adapter tensors are SHAPE_MISMATCH', () => {
    const dir = copyAdapter(scratch, 'adapter-rank0', 'llama-gqa-untied');
    const header = readSafetensorsHeader(path.join(dir, 'adapter_model.safetensors'));
    const tensors: Record<string, TensorToWrite> = {};
    for (const [name, info] of header.tensors) {
      const shape = name.includes('lora_A') ? [0, info.shape[1]] : [info.shape[0], 0];
      tensors[name] = { dtype: 'F32', shape, data: new Float32Array(0) };
    }
    writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
    const error = catchStudioError(() => loadAdapter(base.model, dir));
    expect(error.code).toBe('SHAPE_MISMATCH');
  });
});
