import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { loadBlasBinding } from '../../src/engine/backend/native-matmul';
import { nativeCrossEntropy, nativeKernelsActive } from '../../src/engine/backend/native-kernels';
import { chunkedHeadLoss, type FrozenHead } from '../../src/engine/models/head-loss';
import { softmaxCrossEntropy } from '../../src/engine/models/ops';
import { geluTanh, silu } from '../../src/engine/models/transformer';
import { QuantizedWeight } from '../../src/engine/quant/qlinear';
import { seededValues } from '../helpers/seeded-values';

// The kernels come with the optional native package; without it these cases skip.
const available = loadBlasBinding().binding !== undefined;

const values = (count: number, range: number, seed = 7) => seededValues(count, range, seed);

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;
const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + GELU_A * x ** 3)));
const geluDerivative = (x: number) => {
  const t = Math.tanh(GELU_C * (x + GELU_A * x ** 3));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * x * x);
};
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const siluValue = (x: number) => x * sigmoid(x);
const siluDerivative = (x: number) => sigmoid(x) * (1 + x * (1 - sigmoid(x)));

/** Largest |actual − expected| / max(1, |expected|). */
function maxRelativeError(actual: ArrayLike<number>, expected: (i: number) => number): number {
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const e = expected(i);
    worst = Math.max(worst, Math.abs(actual[i] - e) / Math.max(1, Math.abs(e)));
  }
  return worst;
}

/** Float64 log-softmax cross-entropy of one row, and its softmax. */
function referenceRow(row: ArrayLike<number>, target: number): { loss: number; softmax: number[] } {
  let max = -Infinity;
  for (let j = 0; j < row.length; j++) max = Math.max(max, row[j]);
  let sum = 0;
  for (let j = 0; j < row.length; j++) sum += Math.exp(row[j] - max);
  const softmax = Array.from(row, (v) => Math.exp(v - max) / sum);
  return { loss: Math.log(sum) + max - row[target], softmax };
}

/** Gradient of `f` for `x`, with the value, on the active backend. */
function valueAndGrad(f: (x: tf.Tensor2D) => tf.Tensor, x: tf.Tensor2D, dy?: tf.Tensor): { value: Float32Array; grad: Float32Array } {
  const { value, grad } = tf.valueAndGrad((input: tf.Tensor) => f(input as tf.Tensor2D))(x, dy);
  const result = { value: value.dataSync() as Float32Array, grad: grad.dataSync() as Float32Array };
  tf.dispose([value, grad]);
  return result;
}

describe.skipIf(!available)('native kernels on the wasm backend', () => {
  beforeAll(async () => {
    await selectBackend({ force: 'wasm' });
  });

  it('are active after the backend is chosen', () => {
    expect(nativeKernelsActive()).toBe(true);
  });

  const inputs = values(4096, 12);
  inputs.set([0, -0, 1e-8, -1e-8, 50, -50, 200, -200], 0);

  it('GELU and its gradient match a float64 reference', () => {
    const x = tf.tensor2d(inputs, [64, 64]);
    const dy = tf.tensor2d(values(4096, 2, 11), [64, 64]);
    const upstream = dy.dataSync();
    const { value, grad } = valueAndGrad(geluTanh, x, dy);
    expect(maxRelativeError(value, (i) => gelu(inputs[i]))).toBeLessThanOrEqual(2e-6);
    // In float32, 1 − t² loses digits where tanh is close to ±1.
    expect(maxRelativeError(grad, (i) => upstream[i] * geluDerivative(inputs[i]))).toBeLessThanOrEqual(1e-5);
    tf.dispose([x, dy]);
  });

  it('SiLU and its gradient match a float64 reference', () => {
    const x = tf.tensor2d(inputs, [64, 64]);
    const dy = tf.tensor2d(values(4096, 2, 13), [64, 64]);
    const upstream = dy.dataSync();
    const { value, grad } = valueAndGrad(silu, x, dy);
    expect(maxRelativeError(value, (i) => siluValue(inputs[i]))).toBeLessThanOrEqual(2e-6);
    expect(maxRelativeError(grad, (i) => upstream[i] * siluDerivative(inputs[i]))).toBeLessThanOrEqual(2e-6);
    tf.dispose([x, dy]);
  });

  it('cross-entropy rows and their gradient match a float64 reference', () => {
    const rows = 7;
    const vocab = 1003; // not a multiple of the kernel's eight lanes
    const data = values(rows * vocab, 15, 21);
    const targets = [0, 1002, 5, 500, 999, 7, 64];
    const scale = 1 / rows;
    const logits = tf.tensor2d(data, [rows, vocab]);
    const { losses, grad } = nativeCrossEntropy(logits, tf.tensor1d(targets, 'int32'), scale);
    const lossValues = losses.dataSync();
    const gradValues = grad.dataSync();
    for (let r = 0; r < rows; r++) {
      const reference = referenceRow(data.subarray(r * vocab, (r + 1) * vocab), targets[r]);
      expect(Math.abs(lossValues[r] - reference.loss)).toBeLessThanOrEqual(1e-5);
      const expected = (j: number) => (reference.softmax[j] - (j === targets[r] ? 1 : 0)) * scale;
      expect(maxRelativeError(gradValues.subarray(r * vocab, (r + 1) * vocab), expected)).toBeLessThanOrEqual(1e-7);
    }
    tf.dispose([logits, losses, grad]);
  });

  it('cross-entropy of a row with a NaN or infinite logit is NaN', () => {
    const data = new Float32Array(3 * 16).fill(0.5);
    data[3] = NaN;
    data[16 + 4] = Infinity;
    const logits = tf.tensor2d(data, [3, 16]);
    const { losses, grad } = nativeCrossEntropy(logits, tf.tensor1d([1, 2, 3], 'int32'), 1);
    const [first, second, third] = losses.dataSync();
    expect(Number.isNaN(first)).toBe(true);
    expect(Number.isNaN(second)).toBe(true);
    expect(third).toBeCloseTo(Math.log(16), 6);
    tf.dispose([logits, losses, grad]);
  });

  it('cross-entropy rejects a target outside the vocabulary, naming it', () => {
    const logits = tf.zeros([2, 8]) as tf.Tensor2D;
    const targets = tf.tensor1d([1, 8], 'int32');
    expect(() => nativeCrossEntropy(logits, targets, 1)).toThrow(/target 8 of row 1 is outside the vocabulary of 8/);
    tf.dispose([logits, targets]);
  });
});

describe.skipIf(!available)('native 4-bit dequantization', () => {
  for (const [quantType, doubleQuant, out, inFeatures, blocksize] of [
    ['nf4', true, 48, 64, 64],
    ['nf4', false, 5, 37, 32],
    ['fp4', true, 7, 300, 128],
  ] as const) {
    it(`${quantType}${doubleQuant ? ' + double quant' : ''}, [${out}, ${inFeatures}], blocksize ${blocksize}: equal to the tfjs-op rebuild`, async () => {
      const weight = values(out * inFeatures, 0.2, out + inFeatures);
      const settings = { quantType, blocksize, doubleQuant };

      await selectBackend({ force: 'cpu' });
      const onCpu = new QuantizedWeight(weight, out, inFeatures, settings);
      const expected = onCpu.dequantize();
      const expectedValues = expected.dataSync().slice();
      tf.dispose(expected);
      onCpu.dispose();

      await selectBackend({ force: 'wasm' });
      expect(nativeKernelsActive()).toBe(true);
      const onWasm = new QuantizedWeight(weight, out, inFeatures, settings);
      const actual = onWasm.dequantize();
      expect(actual.shape).toEqual([out, inFeatures]);
      expect(maxRelativeError(actual.dataSync(), (i) => expectedValues[i])).toBeLessThanOrEqual(1e-7);
      tf.dispose(actual);
      onWasm.dispose();
    });
  }
});

describe.each(['wasm', 'cpu'] as const)('chunked LM-head loss on %s', (backend) => {
  beforeAll(async () => {
    await selectBackend({ force: backend });
  });

  const n = 10;
  const hiddenSize = 6;
  const vocab = 37;
  const targets = [0, 36, 4, 4, 17, 9, 30, 2, 11, 25];

  /** Builds a tied head over a fixed table `[vocab, hidden]`. */
  function head(table: tf.Tensor2D): FrozenHead {
    return { vocabSize: vocab, logits: (x) => tf.matMul(x, table, false, true), inputGradient: (g) => tf.matMul(g, table) };
  }

  for (const chunkRows of [1, 3, 10, 64]) {
    it(`${chunkRows} rows per chunk: loss and hidden-state gradient equal the plain path`, () => {
      const table = tf.tensor2d(values(vocab * hiddenSize, 1, 3), [vocab, hiddenSize]);
      const hidden = tf.tensor2d(values(n * hiddenSize, 2, 5), [n, hiddenSize]);
      const plain = valueAndGrad((x) => softmaxCrossEntropy(tf.matMul(x, table, false, true), targets), hidden);
      const chunked = valueAndGrad((x) => chunkedHeadLoss(x, targets, head(table), chunkRows), hidden);
      expect(Math.abs(chunked.value[0] - plain.value[0])).toBeLessThanOrEqual(1e-6);
      expect(maxRelativeError(chunked.grad, (i) => plain.grad[i])).toBeLessThanOrEqual(1e-6);

      // With the tape off (evaluation) the value is the same and no gradient is built.
      const before = tf.memory().numTensors;
      const evaluated = tf.tidy(() => chunkedHeadLoss(hidden, targets, head(table), chunkRows));
      expect(Math.abs(evaluated.dataSync()[0] - plain.value[0])).toBeLessThanOrEqual(1e-6);
      evaluated.dispose();
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([table, hidden]);
    });
  }
});
