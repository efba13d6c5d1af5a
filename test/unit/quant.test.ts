import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { mulberry32 } from '../../src/engine/data/random';
import { applyLora, loraVariables } from '../../src/engine/lora';
import { batchLoss, loadModel, type Batch } from '../../src/engine/models';
import type { CausalLM } from '../../src/engine/models/transformer';
import { absmaxErrorBound, dequantizeAbsmax, dequantizeAbsmaxTensor, doubleQuantize, uploadDoubleQuantized, DOUBLE_QUANT_BLOCKSIZE } from '../../src/engine/quant/double-quant';
import { quantizeModel } from '../../src/engine/quant/model';
import {
  FP4_CODEBOOK,
  NF4_CODEBOOK,
  codebookFor,
  dequantizeBlockwise,
  maxCodeGap,
  packBytesInt32,
  packNibbles,
  packNibblesInt32,
  quantizeBlockwise,
  unpackBytesInt32,
  unpackBytesTensor,
  unpackNibbles,
  unpackNibblesInt32,
  unpackNibblesTensor,
  validateBlocksize,
} from '../../src/engine/quant/nf4';
import { QuantizedWeight, quantizeLinear } from '../../src/engine/quant/qlinear';
import { Trainer } from '../../src/engine/train/trainer';
import { DEFAULT_TRAIN_CONFIG, type LoraSettings } from '../../src/shared/train-config';
import { FIXTURES, maxAbsDiff, modelDir, readJson, type FixtureModel } from '../helpers/fixtures';

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});

afterAll(async () => {
  await selectBackend({ force: 'wasm' });
});

function normalValues(count: number, seed: number, std = 1): Float32Array {
  const random = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const u = Math.max(random(), 1e-12);
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  }
  return out;
}

const NF4_PUBLISHED = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];

describe('codebooks', () => {
  it('nf4 codebook equals the QLoRA values', () => {
    expect(NF4_CODEBOOK.length).toBe(16);
    for (let i = 0; i < 16; i++) expect(NF4_CODEBOOK[i]).toBe(Math.fround(NF4_PUBLISHED[i]));
  });

  it('fp4 codebook equals the bitsandbytes table over 12', () => {
    const raw = [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3];
    expect(FP4_CODEBOOK.length).toBe(16);
    for (let i = 0; i < 16; i++) expect(FP4_CODEBOOK[i]).toBe(Math.fround(raw[i] / 12));
    expect(FP4_CODEBOOK[3]).toBe(1);
    expect(FP4_CODEBOOK[1]).toBeCloseTo(5.208333333e-3, 9);
  });

  it('largest nf4 gap is between -1 and the next code', () => {
    expect(maxCodeGap(NF4_CODEBOOK)).toBeCloseTo(1 - 0.6961928009986877, 6);
    expect(maxCodeGap(FP4_CODEBOOK)).toBeCloseTo(1 / 3, 6);
  });
});

describe('blockwise quantization', () => {
  const cases: Array<{ quantType: 'nf4' | 'fp4'; blocksize: number; length: number }> = [
    { quantType: 'nf4', blocksize: 64, length: 64 * 20 + 37 },
    { quantType: 'nf4', blocksize: 32, length: 32 * 7 },
    { quantType: 'nf4', blocksize: 4096, length: 5000 },
    { quantType: 'fp4', blocksize: 64, length: 64 * 9 + 1 },
    { quantType: 'nf4', blocksize: 100, length: 999 },
  ];

  for (const { quantType, blocksize, length } of cases) {
    it(`${quantType} round trip error within half the largest gap (blocksize ${blocksize}, ${length} values)`, () => {
      const codebook = codebookFor(quantType);
      const values = normalValues(length, blocksize + length, 0.05);
      const quantized = quantizeBlockwise(values, codebook, blocksize);
      expect(quantized.absmax.length).toBe(Math.ceil(length / blocksize));
      expect(quantized.codes.length).toBe(Math.ceil(length / blocksize) * blocksize);
      const restored = dequantizeBlockwise(quantized.codes, quantized.absmax, codebook, blocksize, length);
      const halfGap = maxCodeGap(codebook) / 2;

      for (let block = 0; block < quantized.absmax.length; block++) {
        const start = block * blocksize;
        const end = Math.min(start + blocksize, length);
        let absmax = 0;
        let maxError = 0;
        for (let i = start; i < end; i++) {
          absmax = Math.max(absmax, Math.abs(values[i]));
          maxError = Math.max(maxError, Math.abs(values[i] - restored[i]));
        }
        expect(quantized.absmax[block]).toBe(absmax);
        expect(maxError).toBeLessThanOrEqual(halfGap * absmax * (1 + 1e-6));
      }
    });
  }

  it('quantization picks the nearest code for every value', () => {
    const values = normalValues(640, 7);
    for (const codebook of [NF4_CODEBOOK, FP4_CODEBOOK]) {
      const quantized = quantizeBlockwise(values, codebook, 64);
      for (let i = 0; i < values.length; i++) {
        const absmax = quantized.absmax[Math.floor(i / 64)];
        const normalized = values[i] / absmax;
        const chosen = Math.abs(normalized - codebook[quantized.codes[i]]);
        const best = Math.min(...Array.from(codebook, (c) => Math.abs(normalized - c)));
        expect(chosen).toBeLessThanOrEqual(best + 1e-7);
      }
    }
  });

  it('nf4 round trip keeps absmax exactly', () => {
    const values = normalValues(256, 3);
    const quantized = quantizeBlockwise(values, NF4_CODEBOOK, 64);
    const restored = dequantizeBlockwise(quantized.codes, quantized.absmax, NF4_CODEBOOK, 64, values.length);
    for (let block = 0; block < 4; block++) {
      let index = block * 64;
      for (let i = block * 64; i < (block + 1) * 64; i++) if (Math.abs(values[i]) > Math.abs(values[index])) index = i;
      expect(restored[index]).toBe(values[index]);
    }
  });

  it('all-zero block quantizes to exact zeros', () => {
    const values = new Float32Array(128);
    values.fill(0.5, 64);
    for (const codebook of [NF4_CODEBOOK, FP4_CODEBOOK]) {
      const quantized = quantizeBlockwise(values, codebook, 64);
      expect(quantized.absmax[0]).toBe(0);
      const restored = dequantizeBlockwise(quantized.codes, quantized.absmax, codebook, 64, 128);
      expect(Array.from(restored.subarray(0, 64)).every((v) => v === 0)).toBe(true);
      expect(Array.from(restored.subarray(64)).every((v) => v === 0.5)).toBe(true);
    }
  });

  it('blocksize outside 32..4096 is rejected', () => {
    for (const blocksize of [16, 31, 4097, 64.5, Number.NaN]) {
      expect(() => validateBlocksize(blocksize)).toThrow(/blocksize must be an integer from 32 to 4096/);
    }
    expect(() => validateBlocksize(32)).not.toThrow();
    expect(() => validateBlocksize(4096)).not.toThrow();
  });
});

describe('double quantization', () => {
  it('absmax error stays within the stated bound', () => {
    // Absmax values of NF4 blocks of a N(0, 0.02) weight: positive, around 0.05.
    const weights = normalValues(64 * 1000 + 5, 11, 0.02);
    const { absmax } = quantizeBlockwise(weights, NF4_CODEBOOK, 64);
    const quantized = doubleQuantize(absmax);
    expect(quantized.scales.length).toBe(Math.ceil(absmax.length / DOUBLE_QUANT_BLOCKSIZE));
    const restored = dequantizeAbsmax(quantized);
    let worstRelative = 0;
    for (let i = 0; i < absmax.length; i++) {
      const error = Math.abs(restored[i] - absmax[i]);
      expect(error).toBeLessThanOrEqual(absmaxErrorBound(quantized, absmax[i], i));
      worstRelative = Math.max(worstRelative, error / absmax[i]);
    }
    // 8 bits over the spread around the mean: well under 1% of each absmax here.
    expect(worstRelative).toBeLessThan(0.01);
  });

  it('constant absmax is restored exactly', () => {
    const absmax = new Float32Array(300).fill(0.125);
    const restored = dequantizeAbsmax(doubleQuantize(absmax));
    expect(Array.from(restored).every((v) => v === 0.125)).toBe(true);
  });

  it('tensor dequantization equals the host reference', () => {
    const absmax = Float32Array.from(normalValues(777, 5), (v) => Math.abs(v) * 0.1 + 0.01);
    const quantized = doubleQuantize(absmax);
    const stored = uploadDoubleQuantized(quantized);
    const restored = dequantizeAbsmaxTensor(stored);
    expect(maxAbsDiff(restored.dataSync(), dequantizeAbsmax(quantized))).toBeLessThanOrEqual(1e-8);
    tf.dispose([restored, stored.codes, stored.scales, stored.mean]);
  });
});

describe('packing', () => {
  // Every code value at every nibble position of an int32, plus an odd tail.
  const codes = Uint8Array.from({ length: 16 * 8 * 2 + 3 }, (_, i) => (i * 7 + (i >> 3)) % 16);

  it('two codes per byte round trip exactly', () => {
    const packed = packNibbles(codes);
    expect(packed.length).toBe(Math.ceil(codes.length / 2));
    expect(packed[0]).toBe((codes[0] << 4) | codes[1]);
    expect(Array.from(unpackNibbles(packed, codes.length))).toEqual(Array.from(codes));
  });

  it('eight codes per int32 round trip exactly', () => {
    const packed = packNibblesInt32(codes);
    expect(packed.length).toBe(Math.ceil(codes.length / 8));
    expect(Array.from(unpackNibblesInt32(packed, codes.length))).toEqual(Array.from(codes));
    const bytes = Uint8Array.from({ length: 256 * 4 + 1 }, (_, i) => (i * 37 + (i >> 2)) % 256);
    expect(Array.from(unpackBytesInt32(packBytesInt32(bytes), bytes.length))).toEqual(Array.from(bytes));
  });

  for (const backend of ['wasm', 'cpu'] as const) {
    it(`tensor unpacking is exact on ${backend}`, async () => {
      await selectBackend({ force: backend });
      const before = tf.memory().numTensors;
      const packed = tf.tensor1d(packNibblesInt32(codes), 'int32');
      const unpacked = unpackNibblesTensor(packed, codes.length);
      expect(unpacked.dtype).toBe('int32');
      expect(Array.from(unpacked.dataSync())).toEqual(Array.from(codes));

      const bytes = Uint8Array.from({ length: 256 * 4 + 2 }, (_, i) => (i * 37 + (i >> 2)) % 256);
      const packedBytes = tf.tensor1d(packBytesInt32(bytes), 'int32');
      const unpackedBytes = unpackBytesTensor(packedBytes, bytes.length);
      expect(Array.from(unpackedBytes.dataSync())).toEqual(Array.from(bytes));
      tf.dispose([packed, unpacked, packedBytes, unpackedBytes]);
      expect(tf.memory().numTensors).toBe(before);
      await selectBackend({ force: 'wasm' });
    });

    it(`quantized weight dequantizes as the host reference on ${backend}`, async () => {
      await selectBackend({ force: backend });
      const [out, inFeatures] = [48, 40];
      const values = normalValues(out * inFeatures, 21, 0.02);
      for (const doubleQuant of [false, true]) {
        for (const quantType of ['nf4', 'fp4'] as const) {
          const weight = new QuantizedWeight(values, out, inFeatures, { quantType, blocksize: 64, doubleQuant });
          const reference = quantizeBlockwise(values, codebookFor(quantType), 64);
          const absmax = doubleQuant ? dequantizeAbsmax(doubleQuantize(reference.absmax)) : reference.absmax;
          const expected = dequantizeBlockwise(reference.codes, absmax, codebookFor(quantType), 64, values.length);
          const restored = weight.dequantize();
          expect(restored.shape).toEqual([out, inFeatures]);
          expect(maxAbsDiff(restored.dataSync(), expected)).toBeLessThanOrEqual(1e-9);
          restored.dispose();
          weight.dispose();
        }
      }
      await selectBackend({ force: 'wasm' });
    });
  }

  it('tail block shorter than blocksize dequantizes', () => {
    const values = normalValues(10 * 13, 4);
    const weight = new QuantizedWeight(values, 10, 13, { quantType: 'nf4', blocksize: 64, doubleQuant: true });
    expect(weight.codeCount).toBe(192);
    const restored = weight.dequantize();
    const reference = quantizeBlockwise(values, NF4_CODEBOOK, 64);
    const expected = dequantizeBlockwise(reference.codes, dequantizeAbsmax(doubleQuantize(reference.absmax)), NF4_CODEBOOK, 64, values.length);
    expect(maxAbsDiff(restored.dataSync(), expected)).toBeLessThanOrEqual(1e-9);
    restored.dispose();
    weight.dispose();
  });
});

const QLORA = { quantType: 'nf4' as const, blocksize: 64, doubleQuant: true };

const LORA: LoraSettings = {
  r: 4,
  loraAlpha: 8,
  loraDropout: 0,
  targetModules: 'all-linear',
  useRslora: false,
  initLoraWeights: 'kaiming',
};

function fixtureBatch(): Batch {
  const raw = readJson(path.join(FIXTURES, 'inputs', 'ids_masked.json'));
  return { inputIds: raw.input_ids, labels: raw.labels, attentionMask: raw.attention_mask };
}

/** Loads a quantized model and a float32 copy whose linear kernels are its dequantized weights. */
function quantizedPair(name: FixtureModel): { quantized: CausalLM; reference: CausalLM } {
  const quantized = loadModel(modelDir(name)).model;
  const reference = loadModel(modelDir(name)).model;
  quantizeModel(quantized, QLORA);
  const referenceLayers = reference.linearLayers();
  quantized.linearLayers().forEach((layer, i) => {
    if (!layer.quantized) return;
    referenceLayers[i].kernel!.dispose();
    referenceLayers[i].kernel = layer.quantized.materialize();
  });
  return { quantized, reference };
}

/** Gives both models the same LoRA weights, with a random non-zero lora_B when `randomB`. */
function attachSameLora(models: CausalLM[], randomB: boolean): void {
  for (const model of models) applyLora(model, LORA, 17);
  if (!randomB) return;
  const layerLists = models.map((model) => model.linearLayers().filter((layer) => layer.lora));
  layerLists[0].forEach((layer, i) => {
    const values = tf.randomNormal(layer.lora!.loraB.shape, 0, 0.1, 'float32', 100 + i);
    for (const layers of layerLists) layers[i].lora!.loraB.assign(values as tf.Tensor2D);
    values.dispose();
  });
}

describe.each(['llama-gqa-untied', 'gpt2-tiny'] as const)('%s QLoRA', (name) => {
  it('forward with lora_B = 0 equals the dequantized model', () => {
    const { quantized, reference } = quantizedPair(name);
    attachSameLora([quantized, reference], false);
    const batch = fixtureBatch();
    const options = { attentionMask: batch.attentionMask };
    const actual = quantized.forward(batch.inputIds, options);
    const expected = reference.forward(batch.inputIds, options);
    expect(maxAbsDiff(actual.dataSync(), expected.dataSync())).toBeLessThanOrEqual(1e-5);

    // The quantized model is not the float32 model: the weights really were rounded.
    const original = loadModel(modelDir(name)).model;
    const unquantized = original.forward(batch.inputIds, options);
    expect(maxAbsDiff(actual.dataSync(), unquantized.dataSync())).toBeGreaterThan(1e-4);
    tf.dispose([actual, expected, unquantized]);
    for (const model of [quantized, reference, original]) model.dispose();
  });

  it('LoRA gradients equal those through dequantized weights', () => {
    const { quantized, reference } = quantizedPair(name);
    attachSameLora([quantized, reference], true);
    const batch = fixtureBatch();
    const run = (model: CausalLM) => tf.variableGrads(() => batchLoss(model, batch), loraVariables(model));
    const actual = run(quantized);
    const expected = run(reference);
    expect(Math.abs(actual.value.dataSync()[0] - expected.value.dataSync()[0])).toBeLessThanOrEqual(1e-6);

    const actualVariables = loraVariables(quantized);
    const expectedVariables = loraVariables(reference);
    expect(actualVariables.length).toBeGreaterThan(0);
    actualVariables.forEach((variable, i) => {
      const a = actual.grads[variable.name].dataSync();
      const b = expected.grads[expectedVariables[i].name].dataSync();
      expect(maxAbsDiff(a, b)).toBeLessThanOrEqual(1e-5);
    });
    // lora_A receives a gradient only because lora_B is non-zero; check it is not trivially zero.
    const gradA = actual.grads[actualVariables[0].name].dataSync();
    expect(Math.max(...Array.from(gradA, Math.abs))).toBeGreaterThan(1e-6);
    tf.dispose([actual.value, expected.value, ...Object.values(actual.grads), ...Object.values(expected.grads)]);
    quantized.dispose();
    reference.dispose();
  });
});

describe('quantized model memory', () => {
  it('nf4 with double quant stores at most 0.55 bytes per parameter', () => {
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    const floatBytes = model.linearLayers().filter((layer) => layer !== model.lmHead).reduce((sum, layer) => sum + layer.kernel!.size * 4, 0);
    const before = tf.memory().numBytes;
    const report = quantizeModel(model, QLORA);
    const after = tf.memory().numBytes;

    expect(report.layers).toHaveLength(14);
    expect(report.layers).not.toContain('lm_head');
    expect(model.lmHead!.kernel).not.toBeNull();
    expect(report.quantizedParameters).toBe(floatBytes / 4);
    // The backend now stores exactly the reported bytes in place of the float32 kernels.
    expect(before - after).toBe(floatBytes - report.bytes);
    expect(report.bytesPerParameter).toBeLessThanOrEqual(0.55);
    // Per block of two layers: q/o 4096 weights (2048 + 64 + 4 + 4 bytes), k/v 2048 (1024 + 32 + 4 + 4),
    // gate/up/down 10240 (5120 + 160 + 4 + 4).
    expect(report.bytes).toBe(2 * (2 * 2120 + 2 * 1064 + 3 * 5288));
    expect(report.bytesPerParameter).toBeGreaterThanOrEqual(0.5);
    model.dispose();
  });

  it('1024x1024 weight stores 0.516 bytes per parameter', () => {
    const weight = new QuantizedWeight(normalValues(1024 * 1024, 8, 0.02), 1024, 1024, QLORA);
    // Codes 4 bits each, one int8 per 64-value block, one float32 scale per 256 blocks, the mean.
    const expected = (1024 * 1024) / 2 + (1024 * 1024) / 64 + 4 * ((1024 * 1024) / 64 / 256) + 4;
    expect(weight.bytes).toBe(expected);
    expect(weight.bytes / weight.parameterCount).toBeCloseTo(0.5159, 4);
    weight.dispose();
  });

  it('without double quant absmax costs 4 bytes per block', () => {
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    const report = quantizeModel(model, { ...QLORA, doubleQuant: false });
    // Every layer size here is a multiple of 64: codes 0.5 B + one float32 per 64 values.
    expect(report.bytesPerParameter).toBeCloseTo(0.5 + 4 / 64, 10);
    model.dispose();
  });

  it('includeLmHead quantizes the untied head', () => {
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    const report = quantizeModel(model, { ...QLORA, includeLmHead: true });
    expect(report.layers).toContain('lm_head');
    expect(model.lmHead!.kernel).toBeNull();
    expect(model.lmHead!.quantized).not.toBeNull();
    model.dispose();
  });

  it('quantizing a layer twice is rejected', () => {
    const { model } = loadModel(modelDir('gpt2-tiny'));
    const layer = model.linearLayers()[0];
    quantizeLinear(layer, QLORA);
    expect(() => quantizeLinear(layer, QLORA)).toThrow(/already quantized/);
    expect(() => quantizeModel(model, { ...QLORA, blocksize: 8 })).toThrow(/blocksize must be an integer/);
    model.dispose();
  });

  it('tensor count does not grow over forward and backward', () => {
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    quantizeModel(model, QLORA);
    applyLora(model, { ...LORA, loraDropout: 0.1 }, 3);
    const batch = fixtureBatch();
    let call = 0;
    const step = () => {
      const context = { training: true, nextSeed: () => call++ };
      const { value, grads } = tf.variableGrads(() => batchLoss(model, batch, { context }), loraVariables(model));
      tf.dispose([value, ...Object.values(grads)]);
    };
    step();
    const count = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(count);
    model.dispose();
  });

  it('trainer lowers the loss of a quantized model', () => {
    const { model } = loadModel(modelDir('llama-gqa-untied'));
    quantizeModel(model, QLORA);
    applyLora(model, LORA, 5);
    const ids: number[][] = readJson(path.join(FIXTURES, 'inputs', 'train_fixed.json')).input_ids;
    const trainer = new Trainer({
      model,
      train: ids.map((row) => ({ input_ids: row.slice(0, 16), labels: row.slice(0, 16) })),
      padTokenId: 0,
      settings: { ...DEFAULT_TRAIN_CONFIG, lora: LORA, learningRate: 1e-2, schedule: 'constant', batchSize: 4, maxSteps: 6 },
    });
    const first = trainer.trainStep().loss;
    let last = first;
    for (let i = 0; i < 5; i++) last = trainer.trainStep().loss;
    expect(last).toBeLessThan(first);
    trainer.dispose();
    model.dispose();
  });
});
