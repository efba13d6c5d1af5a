import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { gguf } from '@huggingface/gguf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { exportGgufAdapter, libraryVersions } from '../../src/engine/export';
import { GGUF_ALIGNMENT, ggufTensorName, permuteRowsForRope } from '../../src/engine/export/gguf';
import { attachLora } from '../../src/engine/lora';
import { loadAdapter } from '../../src/engine/lora/adapter';
import { loadModel } from '../../src/engine/models';
import { FIXTURE_MODELS, adapterDir, maxAbsDiff, modelDir } from '../helpers/fixtures';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'gguf-test-'));
const ids = [[7, 3, 99, 41, 250, 18]];

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** Inverse of permuteRowsForRope: interleaved pairs back to halves. */
function unpermute(data: Float32Array, rows: number, columns: number, heads: number): Float32Array {
  const headDim = rows / heads;
  const half = headDim / 2;
  const out = new Float32Array(data.length);
  for (let head = 0; head < heads; head++) {
    for (let pair = 0; pair < half; pair++) {
      for (let which = 0; which < 2; which++) {
        const source = head * headDim + pair * 2 + which;
        const target = head * headDim + which * half + pair;
        out.set(data.subarray(source * columns, (source + 1) * columns), target * columns);
      }
    }
  }
  return out;
}

describe('gguf names', () => {
  it('maps module paths to llama.cpp tensors', () => {
    expect(ggufTensorName('model.layers.3.self_attn.q_proj', 'llama')).toBe('blk.3.attn_q.weight');
    expect(ggufTensorName('model.layers.0.mlp.down_proj', 'llama')).toBe('blk.0.ffn_down.weight');
    expect(ggufTensorName('transformer.h.1.attn.c_attn', 'gpt2')).toBe('blk.1.attn_qkv.weight');
    expect(ggufTensorName('transformer.h.1.mlp.c_proj', 'gpt2')).toBe('blk.1.ffn_down.weight');
    expect(ggufTensorName('lm_head', 'llama')).toBe('output.weight');
  });

  it('rope permutation interleaves each head', () => {
    // One head of 4 rows [a0, a1, b0, b1] becomes [a0, b0, a1, b1].
    const permuted = permuteRowsForRope(Float32Array.from([0, 1, 2, 3]), 4, 1, 1);
    expect(Array.from(permuted)).toEqual([0, 2, 1, 3]);
  });
});

describe.each(FIXTURE_MODELS)('%s gguf adapter', (name) => {
  it('parses and reproduces the PEFT adapter', async () => {
    const out = exportGgufAdapter(adapterDir(name), modelDir(name), path.join(scratch, name), {
      baseModel: modelDir(name),
      method: 'lora',
      versions: libraryVersions(),
      createdAt: new Date().toISOString(),
    });
    const file = path.join(out, 'adapter.gguf');
    const parsed = await gguf(file, { allowLocalFile: true });
    const metadata = parsed.metadata as Record<string, unknown>;
    const expectedArchitecture = name === 'gpt2-tiny' ? 'gpt2' : name === 'qwen2-tiny' ? 'qwen2' : 'llama';
    expect(metadata['general.architecture']).toBe(expectedArchitecture);
    expect(metadata['general.type']).toBe('adapter');
    expect(metadata['adapter.type']).toBe('lora');
    expect(metadata['adapter.lora.alpha']).toBe(16);
    expect(Number(parsed.tensorDataOffset) % GGUF_ALIGNMENT).toBe(0);

    // Read every tensor back, undo the q/k permutation, and load it as LoRA weights.
    const bytes = fs.readFileSync(file);
    const { model } = loadModel(modelDir(name));
    const layers = new Map(model.linearLayers().map((layer) => [ggufTensorName(layer.name, model.config.family)!, layer]));
    const byName = new Map(parsed.tensorInfos.map((info) => [info.name, info]));
    const read = (tensorName: string) => {
      const info = byName.get(tensorName)!;
      expect(info.dtype).toBe(0);
      expect(Number(info.offset) % GGUF_ALIGNMENT).toBe(0);
      const [columns, rows] = info.shape.map(Number);
      const start = Number(parsed.tensorDataOffset + info.offset);
      const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + rows * columns * 4));
      return { rows, columns, data };
    };
    let adapted = 0;
    for (const [tensorName, layer] of layers) {
      if (!byName.has(`${tensorName}.lora_a`)) continue;
      const a = read(`${tensorName}.lora_a`);
      const b = read(`${tensorName}.lora_b`);
      expect([a.rows, a.columns]).toEqual([8, layer.inFeatures]);
      expect([b.rows, b.columns]).toEqual([layer.outFeatures, 8]);
      let bData: Float32Array = b.data;
      if (expectedArchitecture === 'llama' && /attn_[qk]\.weight$/.test(tensorName)) {
        const heads = tensorName.includes('attn_q') ? model.config.numHeads : model.config.numKeyValueHeads;
        bData = unpermute(bData, b.rows, b.columns, heads);
      }
      attachLora(layer, tf.tensor2d(a.data, [a.rows, a.columns]), tf.tensor2d(bData, [b.rows, b.columns]), Number(metadata['adapter.lora.alpha']), false, 0);
      adapted++;
    }
    expect(adapted).toBe(parsed.tensorInfos.length / 2);

    const reference = loadModel(modelDir(name)).model;
    loadAdapter(reference, adapterDir(name));
    const expected = reference.forward(ids);
    const actual = model.forward(ids);
    expect(maxAbsDiff(actual.dataSync(), expected.dataSync())).toBeLessThanOrEqual(1e-6);
    tf.dispose([expected, actual]);
    model.dispose();
    reference.dispose();
  });
});
