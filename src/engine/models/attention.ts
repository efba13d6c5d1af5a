/**
 * Causal attention computed in chunks of queries, so the score matrix of one step is
 * `[batch·kvHeads, group·chunk, keyLength]` instead of `[…, group·seq, keyLength]`.
 *
 * Each chunk is one custom-gradient operation that keeps only its inputs (queries of the chunk,
 * keys, values, mask rows) for the backward pass and recomputes the softmax there. So neither
 * pass keeps more than one chunk's scores, which plain autodiff would keep for every chunk until
 * the backward pass reaches it.
 */
import * as tf from '@tensorflow/tfjs-core';
import { StudioError } from '../../shared/errors';
import { transposesAreFree } from './matmul';

/**
 * Number of `[chunk, keyLength]` float32 score-sized buffers alive at once per head, an estimate:
 * the backward pass of a chunk keeps the probabilities, their gradient, and the product of the
 * two while computing the score gradient.
 */
export const LIVE_SCORE_BUFFERS = 4;

const BYTES_PER_FLOAT = 4;

interface ChunkShape {
  batch: number;
  kvHeads: number;
  group: number;
  length: number;
  keyLength: number;
  scale: number;
}

/**
 * Scaled dot-product attention with grouped key/value heads, the same result and gradients as
 * `groupedAttention` in transformer.ts: query heads sharing a key/value head are folded into the
 * sequence axis, and `mask` is additive, `[batch or 1, 1, 1, seq, keyLength]`.
 *
 * @param queries `[batch, heads, seq, headDim]`
 * @param keys `[batch, kvHeads, keyLength, headDim]`
 * @param values `[batch, kvHeads, keyLength, headDim]`
 * @param chunkSize query positions per chunk (the last chunk may be shorter); see `attentionChunkSize`.
 * @returns `[batch, heads, seq, headDim]`
 */
export function chunkedGroupedAttention(queries: tf.Tensor4D, keys: tf.Tensor4D, values: tf.Tensor4D, mask: tf.Tensor, kvHeads: number, chunkSize: number): tf.Tensor4D {
  const [batch, heads, seq, headDim] = queries.shape;
  const keyLength = keys.shape[2];
  validateAttentionShapes(queries, keys, values, mask, kvHeads, chunkSize);
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(headDim);

  const k = tf.reshape(keys, [batch * kvHeads, keyLength, headDim]);
  const v = tf.reshape(values, [batch * kvHeads, keyLength, headDim]);
  const grouped = tf.reshape(queries, [batch, kvHeads, group, seq, headDim]);

  const outputs: tf.Tensor[] = [];
  for (let start = 0; start < seq; start += chunkSize) {
    const length = Math.min(chunkSize, seq - start);
    const chunk = tf.slice(grouped, [0, 0, 0, start, 0], [batch, kvHeads, group, length, headDim]);
    const q = tf.reshape(chunk, [batch * kvHeads, group * length, headDim]);
    const maskRows = tf.slice(mask, [0, 0, 0, start, 0], [mask.shape[0], 1, 1, length, keyLength]);
    const out = attendChunk(q, k, v, maskRows, { batch, kvHeads, group, length, keyLength, scale }); // [b·kv, group·length, d]
    outputs.push(tf.reshape(out, [batch, kvHeads, group, length, headDim]));
  }

  const merged = outputs.length === 1 ? outputs[0] : tf.concat(outputs, 3);
  return tf.reshape(merged, [batch, heads, seq, headDim]);
}

/**
 * Chooses the largest chunk whose score buffers fit in `maxAttentionBytes`, at least 1. A chunk of
 * c query positions needs about `batch · heads · c · keyLength · 4 bytes · LIVE_SCORE_BUFFERS`.
 */
export function attentionChunkSize(options: { maxAttentionBytes: number; batch: number; heads: number; keyLength: number }): number {
  const { maxAttentionBytes, batch, heads, keyLength } = options;
  for (const [name, value] of Object.entries({ batch, heads, keyLength })) {
    if (!Number.isInteger(value) || value < 1) {
      throw new StudioError('INVALID_ARGUMENT', `Attention ${name} must be a positive integer. Received: ${name}=${value}.`);
    }
  }
  if (!(maxAttentionBytes > 0)) {
    throw new StudioError('INVALID_ARGUMENT', `The attention memory budget must be positive. Received: maxAttentionBytes=${maxAttentionBytes}.`, 'Give the budget in bytes, e.g. 268435456 for 256 MiB.');
  }
  const bytesPerQuery = batch * heads * keyLength * BYTES_PER_FLOAT * LIVE_SCORE_BUFFERS;
  return Math.max(1, Math.floor(maxAttentionBytes / bytesPerQuery));
}

/**
 * Batched `op(a) · op(b)`. On the plain wasm backend (`transposesAreFree()` false) it runs as
 * one plain 2-D product per batch entry with explicit transposes, the only form XNNPACK takes
 * (matmul.ts). It is not differentiable; the callers state their gradients themselves.
 */
function product(a: tf.Tensor3D, b: tf.Tensor3D, transposeA = false, transposeB = false): tf.Tensor3D {
  if (transposesAreFree()) return tf.matMul(a, b, transposeA, transposeB);
  const left = tf.unstack(a) as tf.Tensor2D[];
  const right = tf.unstack(b) as tf.Tensor2D[];
  return tf.stack(left.map((l, i) => tf.matMul(transposeA ? tf.transpose(l) : l, transposeB ? tf.transpose(right[i]) : right[i]))) as tf.Tensor3D;
}

/** Softmax probabilities `[b·kv, group·length, keyLength]` of one chunk. */
function chunkProbabilities(q: tf.Tensor, k: tf.Tensor, mask: tf.Tensor, shape: ChunkShape): tf.Tensor3D {
  const { batch, kvHeads, group, length, keyLength, scale } = shape;
  const scores = tf.mul(product(q as tf.Tensor3D, k as tf.Tensor3D, false, true), scale);
  const masked = tf.add(tf.reshape(scores, [batch, kvHeads, group, length, keyLength]), mask);
  return tf.softmax(tf.reshape(masked, [batch * kvHeads, group * length, keyLength])) as tf.Tensor3D;
}

/**
 * `softmax(q·kᵀ·scale + mask) · v` for one chunk, with a backward pass that recomputes the
 * probabilities P from the saved inputs:
 *
 *     dV = Pᵀ·dY,  dP = dY·Vᵀ,  dS = P ⊙ (dP − rowsum(dP ⊙ P)),  dQ = dS·K·scale,  dK = dSᵀ·Q·scale
 *
 */
function attendChunk(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, mask: tf.Tensor, shape: ChunkShape): tf.Tensor3D {
  // The mask is a constant of the step: it is saved for the backward pass (tfjs frees the forward
  // pass's tensors that no gradient saved) but gets no gradient.
  const attend = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [qIn, kIn, vIn] = args as tf.Tensor[];
    const save = args[3] as tf.GradSaveFunc;
    save([qIn, kIn, vIn, mask]);
    // The tidy frees the scores and probabilities now; the backward pass recomputes them.
    const value = tf.tidy(() => product(chunkProbabilities(qIn, kIn, mask, shape), vIn as tf.Tensor3D));
    return {
      value,
      // Runs outside any tidy of the engine, so it frees its own temporaries.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.tidy(() => chunkGradients(dy as tf.Tensor3D, saved, shape)),
    };
  });
  return attend(q, k, v) as tf.Tensor3D;
}

function chunkGradients(dy: tf.Tensor3D, saved: tf.Tensor[], shape: ChunkShape): tf.Tensor[] {
  const [q, k, v, mask] = saved as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor];
  const { scale } = shape;
  const probabilities = chunkProbabilities(q, k, mask, shape);

  const dValues = product(probabilities, dy, true, false); // [b·kv, keyLength, d]
  const dProbabilities = product(dy, v, false, true); // [b·kv, group·length, keyLength]
  const rowDot = tf.sum(tf.mul(dProbabilities, probabilities), -1, true);
  const dScores = tf.mul(probabilities, tf.sub(dProbabilities, rowDot));

  const dQueries = tf.mul(product(dScores as tf.Tensor3D, k), scale);
  const dKeys = tf.mul(product(dScores as tf.Tensor3D, q, true, false), scale);
  return [dQueries, dKeys, dValues];
}

function validateAttentionShapes(queries: tf.Tensor4D, keys: tf.Tensor4D, values: tf.Tensor4D, mask: tf.Tensor, kvHeads: number, chunkSize: number): void {
  const [batch, heads, seq, headDim] = queries.shape;
  const keyLength = keys.shape[2];
  if (!Number.isInteger(chunkSize) || chunkSize < 1) {
    throw new StudioError('INVALID_ARGUMENT', `Attention chunk size must be a positive integer. Received: chunkSize=${chunkSize}.`, 'Compute it with attentionChunkSize from a memory budget.');
  }
  if (heads % kvHeads !== 0 || keys.shape[1] !== kvHeads || keys.shape[0] !== batch || keys.shape[3] !== headDim || values.shape.some((d, i) => d !== keys.shape[i])) {
    throw new StudioError(
      'SHAPE_MISMATCH',
      `Attention got queries [${queries.shape}], keys [${keys.shape}], values [${values.shape}] with ${kvHeads} key/value heads.`,
      'Keys and values must be [batch, kvHeads, keyLength, headDim], and heads a multiple of kvHeads.',
    );
  }
  const maskOk = mask.rank === 5 && (mask.shape[0] === batch || mask.shape[0] === 1) && mask.shape[1] === 1 && mask.shape[2] === 1 && mask.shape[3] === seq && mask.shape[4] === keyLength;
  if (!maskOk) {
    throw new StudioError('SHAPE_MISMATCH', `Attention mask has shape [${mask.shape}]; expected [${batch}, 1, 1, ${seq}, ${keyLength}].`, 'Build it with buildAttentionMask.');
  }
}
