/**
 * Double quantization (QLoRA): the float32 absmax constants of the 4-bit blocks are themselves
 * quantized to 8 bits, which lowers their cost from 32/64 to about 8/64 bits per weight.
 *
 * The mean of all absmax values is subtracted first, because the values are all positive and
 * centering them doubles the resolution. Then blocks of 256 centered values `c` are quantized
 * with a symmetric linear int8 code, `q = round(c / scale)` with `scale = max|c| / 127`, and one
 * float32 scale per block. bitsandbytes quantizes this second level with its non-linear dynamic 8-bit map instead;
 * the linear code is used here because its error bound is simple to state and check:
 *
 *     |dequantized − absmax| ≤ scale / 2 + 2^-22 · (|absmax| + |mean| + 127 · scale)
 *
 * The second term covers float32 rounding of the scale, the product and the sum.
 */
import * as tf from '@tensorflow/tfjs-core';
import { packBytesInt32, unpackBytesTensor } from './nf4';

export const DOUBLE_QUANT_BLOCKSIZE = 256;

/** int8 codes are stored offset by this value, as bytes 1..255 (128 is zero). */
const INT8_OFFSET = 128;
const INT8_MAX = 127;

export interface DoubleQuantizedAbsmax {
  /** One code per absmax, `q + 128` in 1..255. */
  codes: Uint8Array;
  /** One float32 scale per block of 256 codes: `max|absmax − mean| / 127`. */
  scales: Float32Array;
  /** Mean of the absmax values, rounded to float32. */
  mean: number;
  /** Number of absmax values. */
  count: number;
}

/** Quantizes `absmax` to int8 codes around its mean, in blocks of 256. */
export function doubleQuantize(absmax: Float32Array): DoubleQuantizedAbsmax {
  const count = absmax.length;
  let sum = 0;
  for (let i = 0; i < count; i++) sum += absmax[i];
  const mean = Math.fround(count > 0 ? sum / count : 0);

  const blockCount = Math.ceil(count / DOUBLE_QUANT_BLOCKSIZE);
  const codes = new Uint8Array(count).fill(INT8_OFFSET);
  const scales = new Float32Array(blockCount);
  for (let block = 0; block < blockCount; block++) {
    const start = block * DOUBLE_QUANT_BLOCKSIZE;
    const end = Math.min(start + DOUBLE_QUANT_BLOCKSIZE, count);
    let max = 0;
    for (let i = start; i < end; i++) max = Math.max(max, Math.abs(absmax[i] - mean));
    const scale = Math.fround(max / INT8_MAX);
    scales[block] = scale;
    if (scale === 0) continue;
    for (let i = start; i < end; i++) {
      const q = Math.max(-INT8_MAX, Math.min(INT8_MAX, Math.round((absmax[i] - mean) / scale)));
      codes[i] = q + INT8_OFFSET;
    }
  }
  return { codes, scales, mean, count };
}

/** Restores the absmax values in float32 arithmetic, as the tensor path does (a reference). */
export function dequantizeAbsmax(quantized: DoubleQuantizedAbsmax): Float32Array {
  const out = new Float32Array(quantized.count);
  for (let i = 0; i < quantized.count; i++) {
    const q = quantized.codes[i] - INT8_OFFSET;
    const scale = quantized.scales[Math.floor(i / DOUBLE_QUANT_BLOCKSIZE)];
    out[i] = Math.fround(Math.fround(q * scale) + quantized.mean);
  }
  return out;
}

/** Computes the largest error `|dequantized − absmax|` the scheme allows for absmax value `index`. */
export function absmaxErrorBound(quantized: DoubleQuantizedAbsmax, absmax: number, index: number): number {
  const scale = quantized.scales[Math.floor(index / DOUBLE_QUANT_BLOCKSIZE)];
  return scale / 2 + 2 ** -22 * (Math.abs(absmax) + Math.abs(quantized.mean) + INT8_MAX * scale);
}

/** The double-quantized absmax as backend tensors (int8 codes packed four per int32). */
export interface DoubleQuantizedAbsmaxTensors {
  codes: tf.Tensor1D;
  scales: tf.Tensor1D;
  mean: tf.Scalar;
  count: number;
}

export function uploadDoubleQuantized(quantized: DoubleQuantizedAbsmax): DoubleQuantizedAbsmaxTensors {
  return {
    codes: tf.tensor1d(packBytesInt32(quantized.codes), 'int32'),
    scales: tf.tensor1d(quantized.scales, 'float32'),
    mean: tf.scalar(quantized.mean, 'float32'),
    count: quantized.count,
  };
}

/** Restores the absmax `[count]` (float32) from the packed tensors, on the backend. */
export function dequantizeAbsmaxTensor(stored: DoubleQuantizedAbsmaxTensors): tf.Tensor1D {
  return tf.tidy(() => {
    const blockCount = stored.scales.shape[0];
    const bytes = unpackBytesTensor(stored.codes, stored.count);
    const q = tf.cast(tf.sub(bytes, tf.scalar(INT8_OFFSET, 'int32')), 'float32');
    // Storage has no padding, so the last block is padded with zeros here.
    const padded = tf.pad(q, [[0, blockCount * DOUBLE_QUANT_BLOCKSIZE - stored.count]]);
    const scaled = tf.mul(tf.reshape(padded, [blockCount, DOUBLE_QUANT_BLOCKSIZE]), tf.reshape(stored.scales, [blockCount, 1]));
    const flat = tf.slice(tf.reshape(scaled, [-1]), 0, stored.count);
    return tf.add(flat, stored.mean) as tf.Tensor1D;
  });
}
