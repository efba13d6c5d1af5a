/**
 * Rotary position embeddings as Hugging Face transformers computes them for Llama, Qwen2 and
 * Mistral: `inv_freq[i] = 1 / theta^(2i / d)`, angles `position · inv_freq`, duplicated to the
 * full head dimension, and applied as `x · cos + rotate_half(x) · sin` with
 * `rotate_half([x1, x2]) = [-x2, x1]`.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { RopeScaling } from './config';

/**
 * The inverse frequencies `[headDim / 2]`, with `linear` or `llama3` scaling applied. Computed
 * with float32 rounding at each step, as PyTorch does, so angles match to the last bit at small
 * positions.
 */
export function ropeInverseFrequencies(headDim: number, theta: number, scaling?: RopeScaling): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(2 * i) / headDim);
    inv[i] = Math.fround(1 / Math.fround(Math.pow(theta, exponent)));
  }
  if (!scaling) return inv;
  if (scaling.type === 'linear') return inv.map((f) => Math.fround(f / scaling.factor));
  return applyLlama3Scaling(inv, scaling);
}

/** Llama 3.1's frequency-dependent scaling: long wavelengths divided by `factor`, short kept, a smooth blend between. */
function applyLlama3Scaling(inv: Float32Array, scaling: RopeScaling): Float32Array {
  const factor = scaling.factor;
  const low = scaling.lowFreqFactor ?? 1;
  const high = scaling.highFreqFactor ?? 4;
  const original = scaling.originalMaxPositionEmbeddings ?? 8192;
  const lowFreqWavelen = original / low;
  const highFreqWavelen = original / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return Math.fround(f / factor);
    const smooth = (original / wavelen - low) / (high - low);
    return Math.fround((1 - smooth) * (f / factor) + smooth * f);
  });
}

/** Cosine and sine tables `[positions, headDim]` for positions 0..count-1. */
export function ropeTables(count: number, headDim: number, inverseFrequencies: Float32Array): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(count * headDim);
  const sin = new Float32Array(count * headDim);
  for (let p = 0; p < count; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * inverseFrequencies[i]);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[p * headDim + i] = c;
      cos[p * headDim + i + half] = c;
      sin[p * headDim + i] = s;
      sin[p * headDim + i + half] = s;
    }
  }
  return { cos, sin };
}

/**
 * Applies the rotation to `x [batch, heads, seq, headDim]` with `cos`/`sin` broadcastable to it
 * (`[seq, headDim]` or `[batch, 1, seq, headDim]`).
 */
export function applyRope(x: tf.Tensor4D, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor4D {
  const half = x.shape[3] / 2;
  const [x1, x2] = tf.split(x, [half, half], 3);
  const rotated = tf.concat([tf.neg(x2), x1], 3);
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
}
