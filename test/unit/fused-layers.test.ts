import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { loraDelta, type LoraWeights } from '../../src/engine/lora/layer';
import { fusedLinear } from '../../src/engine/models/fused-linear';
import { layerNorm, mergeHeads, residualAdd, rmsNorm, rope, splitHeads, swiglu } from '../../src/engine/models/fused-ops';
import { applyRope } from '../../src/engine/models/rope';
import { maxAbsDiff } from '../helpers/fixtures';
import { seededValues } from '../helpers/seeded-values';

const values = (count: number, range: number, seed = 7) => seededValues(count, range, seed);

/** Value and gradients of `sum(f(inputs) · weights)` for every input. */
function valueAndGrads(f: (...inputs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], weights: tf.Tensor) {
  const { value, grads } = tf.valueAndGrads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), weights)))(inputs);
  const result = { value: value.dataSync()[0], grads: grads.map((g) => g.dataSync().slice()) };
  tf.dispose([value, ...grads]);
  return result;
}

function expectClose(actual: ReturnType<typeof valueAndGrads>, expected: ReturnType<typeof valueAndGrads>, tolerance: number) {
  expect(Math.abs(actual.value - expected.value)).toBeLessThanOrEqual(tolerance * Math.max(1, Math.abs(expected.value)));
  expect(actual.grads.length).toBe(expected.grads.length);
  actual.grads.forEach((grad, i) => expect(maxAbsDiff(grad, expected.grads[i]), `gradient ${i}`).toBeLessThanOrEqual(tolerance));
}

describe.each(['wasm', 'cpu'] as const)('fused layers on %s', (backend) => {
  beforeAll(async () => {
    await selectBackend({ force: backend });
  });

  const tokens = 7;
  const inFeatures = 12;
  const outFeatures = 5;
  const rank = 3;

  function lora(dropout: number, a: tf.Tensor2D, b: tf.Tensor2D): LoraWeights {
    return { loraA: a as tf.Variable<tf.Rank.R2>, loraB: b as tf.Variable<tf.Rank.R2>, rank, loraAlpha: 2 * rank, scaling: 2, dropout };
  }

  for (const dropout of [0, 0.3]) {
    it(`linear with bias and LoRA (dropout ${dropout}) equals the separate operations`, () => {
      const kernel = tf.tensor2d(values(inFeatures * outFeatures, 0.5, 1), [inFeatures, outFeatures]);
      const bias = tf.tensor1d(values(outFeatures, 0.5, 2));
      const x = tf.tensor2d(values(tokens * inFeatures, 1, 3), [tokens, inFeatures]);
      const a = tf.tensor2d(values(rank * inFeatures, 0.5, 4), [rank, inFeatures]);
      const b = tf.tensor2d(values(outFeatures * rank, 0.5, 5), [outFeatures, rank]);
      const weights = tf.tensor2d(values(tokens * outFeatures, 1, 6), [tokens, outFeatures]);
      const seed = 11;
      const base = { forward: (input: tf.Tensor2D) => tf.matMul(input, kernel) as tf.Tensor2D, inputGradient: (dy: tf.Tensor2D) => tf.matMul(dy, kernel, false, true) as tf.Tensor2D };

      const separate = valueAndGrads(
        (input, la, lb) => tf.add(tf.add(tf.matMul(input as tf.Tensor2D, kernel), bias), loraDelta(input as tf.Tensor2D, lora(dropout, la as tf.Tensor2D, lb as tf.Tensor2D), true, seed)),
        [x, a, b],
        weights,
      );
      const fused = valueAndGrads(
        (input, la, lb) => fusedLinear(input as tf.Tensor2D, { base, bias, lora: lora(dropout, la as tf.Tensor2D, lb as tf.Tensor2D), dropoutSeed: seed, inputGradient: true }),
        [x, a, b],
        weights,
      );
      expectClose(fused, separate, 1e-5);

      // Without the input gradient, the LoRA gradients stay and the input's is zero.
      const withoutInput = valueAndGrads(
        (input, la, lb) => fusedLinear(input as tf.Tensor2D, { base, bias, lora: lora(dropout, la as tf.Tensor2D, lb as tf.Tensor2D), dropoutSeed: seed, inputGradient: false }),
        [x, a, b],
        weights,
      );
      expect(withoutInput.grads[0].every((v) => v === 0)).toBe(true);
      expect(maxAbsDiff(withoutInput.grads[1], separate.grads[1])).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(withoutInput.grads[2], separate.grads[2])).toBeLessThanOrEqual(1e-5);
      tf.dispose([kernel, bias, x, a, b, weights]);
    });
  }

  it('RMSNorm equals the composed formula, for the input and the weight', () => {
    const x = tf.tensor2d(values(tokens * inFeatures, 2, 7), [tokens, inFeatures]);
    // A trainable weight, as in full fine-tuning: the norm computes its gradient only then.
    const w = tf.variable(tf.tensor1d(values(inFeatures, 1, 8)));
    const weights = tf.tensor2d(values(tokens * inFeatures, 1, 9), [tokens, inFeatures]);
    const eps = 1e-6;
    const composed = valueAndGrads((input, weight) => tf.mul(tf.mul(input, tf.rsqrt(tf.add(tf.mean(tf.square(input), -1, true), eps))), weight), [x, w], weights);
    const fused = valueAndGrads((input, weight) => rmsNorm(input as tf.Tensor2D, weight as tf.Tensor1D, eps), [x, w], weights);
    expectClose(fused, composed, 1e-5);
    tf.dispose([x, w, weights]);
  });

  it('LayerNorm equals the composed formula, for the input, weight and bias', () => {
    const x = tf.tensor2d(values(tokens * inFeatures, 2, 10), [tokens, inFeatures]);
    const w = tf.variable(tf.tensor1d(values(inFeatures, 1, 11)));
    const bias = tf.variable(tf.tensor1d(values(inFeatures, 1, 12)));
    const weights = tf.tensor2d(values(tokens * inFeatures, 1, 13), [tokens, inFeatures]);
    const eps = 1e-5;
    const composed = valueAndGrads(
      (input, weight, b) => {
        const { mean, variance } = tf.moments(input, -1, true);
        return tf.add(tf.mul(tf.mul(tf.sub(input, mean), tf.rsqrt(tf.add(variance, eps))), weight), b);
      },
      [x, w, bias],
      weights,
    );
    const fused = valueAndGrads((input, weight, b) => layerNorm(input as tf.Tensor2D, weight as tf.Tensor1D, b as tf.Tensor1D, eps), [x, w, bias], weights);
    expectClose(fused, composed, 1e-5);
    tf.dispose([x, w, bias, weights]);
  });

  it('RoPE equals the composed rotation and its gradient', () => {
    const shape = [2, 3, 4, 6] as const;
    const x = tf.tensor4d(values(2 * 3 * 4 * 6, 1, 14), [...shape]);
    const cos = tf.tensor4d(values(2 * 4 * 6, 1, 15), [2, 1, 4, 6]);
    const sin = tf.tensor4d(values(2 * 4 * 6, 1, 16), [2, 1, 4, 6]);
    const weights = tf.tensor4d(values(2 * 3 * 4 * 6, 1, 17), [...shape]);
    const composed = valueAndGrads((input) => applyRope(input as tf.Tensor4D, cos, sin), [x], weights);
    const fused = valueAndGrads((input) => rope(input as tf.Tensor4D, cos, sin), [x], weights);
    expectClose(fused, composed, 1e-6);
    tf.dispose([x, cos, sin, weights]);
  });

  it('SwiGLU equals silu(gate) · up and its gradients', () => {
    const gate = tf.tensor2d(values(tokens * inFeatures, 6, 18), [tokens, inFeatures]);
    const up = tf.tensor2d(values(tokens * inFeatures, 2, 19), [tokens, inFeatures]);
    const weights = tf.tensor2d(values(tokens * inFeatures, 1, 20), [tokens, inFeatures]);
    const composed = valueAndGrads((g, u) => tf.mul(tf.mul(g, tf.sigmoid(g)), u), [gate, up], weights);
    const fused = valueAndGrads((g, u) => swiglu(g as tf.Tensor2D, u as tf.Tensor2D), [gate, up], weights);
    expectClose(fused, composed, 1e-5);
    tf.dispose([gate, up, weights]);
  });

  it('residual add and head rearrangements equal tfjs ops', () => {
    const [batch, seq, heads, headDim] = [2, 3, 4, 5];
    const a = tf.tensor2d(values(batch * seq * heads * headDim, 1, 27), [batch * seq, heads * headDim]);
    const b = tf.tensor2d(values(batch * seq * heads * headDim, 1, 28), [batch * seq, heads * headDim]);
    const weights = tf.tensor4d(values(batch * seq * heads * headDim, 1, 29), [batch, heads, seq, headDim]);
    const composed = valueAndGrads(
      (x, y) => tf.transpose(tf.reshape(tf.mul(tf.add(x, y), 2), [batch, seq, heads, headDim]), [0, 2, 1, 3]),
      [a, b],
      weights,
    );
    const fused = valueAndGrads((x, y) => splitHeads(tf.mul(residualAdd(x as tf.Tensor2D, y as tf.Tensor2D), 2) as tf.Tensor2D, batch, seq, heads, headDim), [a, b], weights);
    expectClose(fused, composed, 1e-6);

    const split = splitHeads(a, batch, seq, heads, headDim);
    expect(maxAbsDiff(mergeHeads(split).dataSync(), a.dataSync())).toBe(0);
    const flatWeights = tf.tensor2d(values(batch * seq * heads * headDim, 1, 30), [batch * seq, heads * headDim]);
    const merged = valueAndGrads((x) => mergeHeads(x as tf.Tensor4D), [split], flatWeights);
    const mergedComposed = valueAndGrads((x) => tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [batch * seq, heads * headDim]), [split], flatWeights);
    expectClose(merged, mergedComposed, 1e-6);
    tf.dispose([a, b, weights, split, flatWeights]);
  });

  it('frozen norm weights get a zero gradient', () => {
    const x = tf.tensor2d(values(tokens * inFeatures, 2, 23), [tokens, inFeatures]);
    const w = tf.tensor1d(values(inFeatures, 1, 24));
    const bias = tf.tensor1d(values(inFeatures, 1, 25));
    const weights = tf.tensor2d(values(tokens * inFeatures, 1, 26), [tokens, inFeatures]);
    const rms = valueAndGrads((input, weight) => rmsNorm(input as tf.Tensor2D, weight as tf.Tensor1D, 1e-6), [x, w], weights);
    const layer = valueAndGrads((input, weight, b) => layerNorm(input as tf.Tensor2D, weight as tf.Tensor1D, b as tf.Tensor1D, 1e-5), [x, w, bias], weights);
    expect(rms.grads[1].every((v) => v === 0)).toBe(true);
    expect(layer.grads[1].every((v) => v === 0)).toBe(true);
    expect(layer.grads[2].every((v) => v === 0)).toBe(true);
    expect(rms.grads[0].some((v) => v !== 0)).toBe(true);
    tf.dispose([x, w, bias, weights]);
  });

  it('tensor count is unchanged after a forward and backward pass of each', () => {
    const x = tf.tensor2d(values(tokens * inFeatures, 1, 21), [tokens, inFeatures]);
    const w = tf.tensor1d(values(inFeatures, 1, 22));
    const step = () => {
      const grads = tf.grads((input: tf.Tensor, weight: tf.Tensor) => tf.sum(swiglu(rmsNorm(input as tf.Tensor2D, weight as tf.Tensor1D, 1e-6), layerNorm(input as tf.Tensor2D, weight as tf.Tensor1D, weight as tf.Tensor1D, 1e-5))))([x, w]);
      tf.dispose(grads);
    };
    step();
    const before = tf.memory().numTensors;
    step();
    step();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, w]);
  });
});
