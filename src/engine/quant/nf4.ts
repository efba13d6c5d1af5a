/**
 * 4-bit codebooks, blockwise absmax quantization and code packing.
 *
 * A block of `blocksize` consecutive values is divided by its absmax (the largest |value|), and
 * each normalized value in [-1, 1] is stored as the index of the nearest of 16 code values.
 * Dequantization is `codebook[code] · absmax`.
 *
 * Packing: two codes per byte with the first code in the high nibble (the layout bitsandbytes
 * uses), and for tfjs tensors eight codes per int32 element, because tfjs has no uint8 arithmetic.
 * An int32 contains four such bytes, byte k in bits 8k..8k+7.
 */
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';

export type QuantType = 'nf4' | 'fp4';

/**
 * NormalFloat4: the 16 values of QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of
 * Quantized LLMs", arXiv:2305.14314, Appendix E), the same float values as the NF4 table in
 * bitsandbytes (`get_4bit_type("nf4")` in `bitsandbytes/functional.py`). Index 7 is exact zero.
 */
export const NF4_CODEBOOK: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

/**
 * bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit), indexed by the 4-bit code: the raw
 * table `[0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3]` of
 * `get_4bit_type("fp4")` in `bitsandbytes/functional.py`, divided by its absmax 12 as that
 * function does. Bit 3 is the sign, so codes 0 and 8 are both zero.
 */
export const FP4_CODEBOOK: Float32Array = Float32Array.from(
  [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3].map((value) => value / 12),
);

export const DEFAULT_BLOCKSIZE = 64;
export const MIN_BLOCKSIZE = 32;
export const MAX_BLOCKSIZE = 4096;

/** Returns the 16 code values of a quantization type. */
export function codebookFor(quantType: QuantType): Float32Array {
  if (quantType === 'nf4') return NF4_CODEBOOK;
  if (quantType === 'fp4') return FP4_CODEBOOK;
  throw new StudioError('INVALID_ARGUMENT', `Unknown quant_type "${String(quantType)}".`, 'Use nf4 (the QLoRA default) or fp4.');
}

export function validateBlocksize(blocksize: number): void {
  if (!Number.isInteger(blocksize) || blocksize < MIN_BLOCKSIZE || blocksize > MAX_BLOCKSIZE) {
    throw new StudioError(
      'INVALID_ARGUMENT',
      `Quantization blocksize must be an integer from ${MIN_BLOCKSIZE} to ${MAX_BLOCKSIZE}. Received: blocksize=${blocksize}.`,
      'Use 64, the QLoRA default; larger blocks store fewer absmax constants but round more coarsely.',
    );
  }
}

/** Computes the largest distance between neighbouring code values (sorted), in units of absmax. */
export function maxCodeGap(codebook: Float32Array): number {
  const sorted = Array.from(codebook).sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < sorted.length; i++) gap = Math.max(gap, sorted[i] - sorted[i - 1]);
  return gap;
}

export interface BlockwiseQuantized {
  /** One code (0..15) per value, zero-padded to whole blocks: `blockCount · blocksize` entries. */
  codes: Uint8Array;
  /** One absmax per block. */
  absmax: Float32Array;
  /** Number of real values (the padding is not part of the tensor). */
  length: number;
  blocksize: number;
}

/**
 * Quantizes `values` in blocks of `blocksize`. A shorter last block is padded with zeros, which do
 * not change its absmax. Each normalized value gets the nearest code, and a value exactly halfway
 * between two codes gets the lower one, as bitsandbytes' comparisons against midpoints do.
 */
export function quantizeBlockwise(values: Float32Array, codebook: Float32Array, blocksize: number = DEFAULT_BLOCKSIZE): BlockwiseQuantized {
  validateBlocksize(blocksize);
  const rounder = nearestCode(codebook);
  const blockCount = Math.ceil(values.length / blocksize);
  const codes = new Uint8Array(blockCount * blocksize);
  const absmax = new Float32Array(blockCount);

  for (let block = 0; block < blockCount; block++) {
    const start = block * blocksize;
    const end = Math.min(start + blocksize, values.length);
    let max = 0;
    for (let i = start; i < end; i++) max = Math.max(max, Math.abs(values[i]));
    absmax[block] = max;
    const scale = max > 0 ? 1 / max : 0;
    for (let i = start; i < start + blocksize; i++) codes[i] = rounder(i < end ? values[i] * scale : 0);
  }
  return { codes, absmax, length: values.length, blocksize };
}

/** Computes `codebook[code] · absmax` for the first `length` values, as a reference for the tensor path. */
export function dequantizeBlockwise(codes: Uint8Array, absmax: Float32Array, codebook: Float32Array, blocksize: number, length: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.fround(codebook[codes[i]] * absmax[Math.floor(i / blocksize)]);
  return out;
}

/** A function from a normalized value to the index of the nearest code value. */
function nearestCode(codebook: Float32Array): (x: number) => number {
  // Sorted distinct values with the first code index that has each (FP4's -0 maps to code 0).
  const entries = Array.from(codebook, (value, code) => ({ value, code })).sort((a, b) => a.value - b.value || a.code - b.code);
  const distinct = entries.filter((entry, i) => i === 0 || entry.value !== entries[i - 1].value);
  const values = distinct.map((entry) => entry.value);
  const codes = distinct.map((entry) => entry.code);
  const midpoints = values.slice(1).map((value, i) => (value + values[i]) / 2);
  return (x) => {
    // Binary search for the number of midpoints strictly below x.
    let low = 0;
    let high = midpoints.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (midpoints[middle] < x) low = middle + 1;
      else high = middle;
    }
    return codes[low];
  };
}

/** Packs two codes per byte, the first in the high nibble. An odd count leaves the last low nibble 0. */
export function packNibbles(codes: Uint8Array): Uint8Array {
  const packed = new Uint8Array(Math.ceil(codes.length / 2));
  for (let i = 0; i < codes.length; i++) {
    packed[i >> 1] |= i % 2 === 0 ? (codes[i] & 0xf) << 4 : codes[i] & 0xf;
  }
  return packed;
}

export function unpackNibbles(packed: Uint8Array, count: number): Uint8Array {
  const codes = new Uint8Array(count);
  for (let i = 0; i < count; i++) codes[i] = i % 2 === 0 ? packed[i >> 1] >> 4 : packed[i >> 1] & 0xf;
  return codes;
}

/** Packs four bytes per int32, byte k in bits 8k..8k+7 (independent of the platform's byte order). */
export function packBytesInt32(bytes: Uint8Array): Int32Array {
  const packed = new Int32Array(Math.ceil(bytes.length / 4));
  for (let i = 0; i < bytes.length; i++) packed[i >> 2] |= bytes[i] << (8 * (i % 4));
  return packed;
}

export function unpackBytesInt32(packed: Int32Array, count: number): Uint8Array {
  const bytes = new Uint8Array(count);
  for (let i = 0; i < count; i++) bytes[i] = (packed[i >> 2] >>> (8 * (i % 4))) & 0xff;
  return bytes;
}

/** Packs eight codes per int32: the bytes of `packNibbles`, four to an int32. */
export function packNibblesInt32(codes: Uint8Array): Int32Array {
  return packBytesInt32(packNibbles(codes));
}

export function unpackNibblesInt32(packed: Int32Array, count: number): Uint8Array {
  const bytes = unpackBytesInt32(packed, Math.ceil(count / 2));
  return unpackNibbles(bytes, count);
}

/** Bit offsets of the eight codes in an int32 from `packNibblesInt32`: high nibble first per byte. */
const NIBBLE_SHIFTS = [4, 0, 12, 8, 20, 16, 28, 24];
const BYTE_SHIFTS = [0, 8, 16, 24];

/** Unpacks codes `[count]` (int32, 0..15) from a `packNibblesInt32` tensor, on the backend. */
export function unpackNibblesTensor(packed: tf.Tensor1D, count: number): tf.Tensor1D {
  return unpackFields(packed, NIBBLE_SHIFTS, 0xf, count);
}

/** Unpacks bytes `[count]` (int32, 0..255) from a `packBytesInt32` tensor, on the backend. */
export function unpackBytesTensor(packed: tf.Tensor1D, count: number): tf.Tensor1D {
  return unpackFields(packed, BYTE_SHIFTS, 0xff, count);
}

/**
 * Extracts the bit fields `(x >> shift) & fieldMask` of every int32, in `shifts` order.
 *
 * tfjs has no shift operation, and the wasm backend computes int32 FloorDiv in float32, which is
 * inexact above 2^24. So where the backend has BitwiseAnd, the field is isolated first. The value
 * `x & (mask << shift)` has at most 8 significant bits, so dividing it by 2^shift is exact in
 * float32. A final `mod 2^bits` turns the top field's negative quotient (sign bit set) into its
 * unsigned value.
 * Backends without BitwiseAnd get floorDiv and mod, exact where int32 arithmetic is integer.
 */
function unpackFields(packed: tf.Tensor1D, shifts: number[], fieldMask: number, count: number): tf.Tensor1D {
  const bitwise = hasBitwiseAnd();
  // One field at a time, so the temporaries stay at 1/shifts.length of the unpacked size.
  const fields = shifts.map((shift) =>
    tf.tidy(() => {
      const divisor = tf.scalar(2 ** shift, 'int32');
      if (!bitwise) return tf.mod(tf.floorDiv(packed, divisor), tf.scalar(fieldMask + 1, 'int32'));
      const isolated = tf.bitwiseAnd(packed, tf.fill(packed.shape, (fieldMask << shift) | 0, 'int32'));
      const quotient = tf.floorDiv(isolated, divisor);
      // Only the field under the sign bit can be negative; the mod of a small integer is exact.
      return shift + Math.log2(fieldMask + 1) === 32 ? tf.mod(quotient, tf.scalar(fieldMask + 1, 'int32')) : quotient;
    }),
  );
  return tf.tidy(() => {
    // concat + transpose interleaves the fields; on wasm it is several times faster than stack.
    const planar = tf.reshape(tf.concat(fields, 0), [shifts.length, packed.shape[0]]);
    tf.dispose(fields);
    const flat = tf.reshape(tf.transpose(planar), [-1]) as tf.Tensor1D;
    return flat.shape[0] === count ? flat : tf.slice(flat, 0, count);
  });
}

function hasBitwiseAnd(): boolean {
  return tf.getKernel('BitwiseAnd', tf.getBackend()) !== undefined;
}
