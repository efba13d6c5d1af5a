import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/engine/backend';
import { LIVE_SCORE_BUFFERS, attentionChunkSize, chunkedGroupedAttention } from '../../src/engine/models/attention';
import { buildAttentionMask, groupedAttention } from '../../src/engine/models/transformer';
import { maxAbsDiff } from '../helpers/fixtures';

beforeAll(async () => {
  await selectBackend({ force: 'wasm' });
});

interface Case {
  name: string;
  batch: number;
  heads: number;
  kvHeads: number;
  seq: number;
  past: number;
  headDim: number;
  /** Padding row for the second batch entry, covering past + seq. */
  padded: boolean;
}

const CASES: Case[] = [
  { name: 'grouped heads with padding', batch: 2, heads: 4, kvHeads: 2, seq: 13, past: 0, headDim: 8, padded: true },
  { name: 'one key/value head', batch: 1, heads: 4, kvHeads: 1, seq: 10, past: 0, headDim: 16, padded: false },
  { name: 'as many key/value heads as heads', batch: 2, heads: 3, kvHeads: 3, seq: 9, past: 0, headDim: 4, padded: false },
  { name: 'cached past keys', batch: 2, heads: 4, kvHeads: 2, seq: 5, past: 7, headDim: 8, padded: true },
];

function inputs(c: Case, seed: number) {
  const keyLength = c.past + c.seq;
  const queries = tf.randomNormal([c.batch, c.heads, c.seq, c.headDim], 0, 1, 'float32', seed) as tf.Tensor4D;
  const keys = tf.randomNormal([c.batch, c.kvHeads, keyLength, c.headDim], 0, 1, 'float32', seed + 1) as tf.Tensor4D;
  const values = tf.randomNormal([c.batch, c.kvHeads, keyLength, c.headDim], 0, 1, 'float32', seed + 2) as tf.Tensor4D;
  const attentionMask = c.padded ? [Array(keyLength).fill(1), [...Array(keyLength - 2).fill(1), 0, 0]].slice(0, c.batch) : undefined;
  const mask = buildAttentionMask(c.batch, c.seq, c.past, attentionMask);
  const weights = tf.randomNormal([c.batch, c.heads, c.seq, c.headDim], 0, 1, 'float32', seed + 3);
  return { queries, keys, values, mask, weights };
}

describe.each(CASES)('chunked attention, $name', (c) => {
  for (const chunkSize of [1, 3, 4, c.seq, 64]) {
    it(`chunk ${chunkSize} matches full attention and its gradients`, () => {
      const { queries, keys, values, mask, weights } = inputs(c, 10 + chunkSize);
      const full = groupedAttention(queries, keys, values, mask, c.kvHeads);
      const chunked = chunkedGroupedAttention(queries, keys, values, mask, c.kvHeads, chunkSize);
      expect(chunked.shape).toEqual(full.shape);
      expect(maxAbsDiff(chunked.dataSync(), full.dataSync())).toBeLessThanOrEqual(1e-5);

      // Gradients of a weighted sum of the outputs, with respect to q, k and v (the mask is a constant).
      const loss = (attention: typeof groupedAttention) => (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) =>
        tf.sum(tf.mul(attention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, mask, c.kvHeads), weights));
      const expected = tf.grads(loss(groupedAttention))([queries, keys, values]);
      const actual = tf.grads(loss((q, k, v, m, kv) => chunkedGroupedAttention(q, k, v, m, kv, chunkSize)))([queries, keys, values]);
      ['queries', 'keys', 'values'].forEach((name, i) => {
        expect(actual[i].shape, name).toEqual(expected[i].shape);
        expect(maxAbsDiff(actual[i].dataSync(), expected[i].dataSync()), name).toBeLessThanOrEqual(1e-5);
      });
      tf.dispose([queries, keys, values, mask, weights, full, chunked, ...expected, ...actual]);
    });
  }
});

describe('chunked attention', () => {
  it('a mask shared over the batch gives the same output and gradients', () => {
    const c = CASES[0];
    const { queries, keys, values, weights } = inputs(c, 40);
    const shared = buildAttentionMask(1, c.seq, 0);
    const loss = (attention: typeof groupedAttention) => (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) =>
      tf.sum(tf.mul(attention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, shared, c.kvHeads), weights));
    const expected = tf.grads(loss(groupedAttention))([queries, keys, values]);
    const actual = tf.grads(loss((q, k, v, m, kv) => chunkedGroupedAttention(q, k, v, m, kv, 5)))([queries, keys, values]);
    actual.forEach((gradient, i) => expect(maxAbsDiff(gradient.dataSync(), expected[i].dataSync())).toBeLessThanOrEqual(1e-5));
    tf.dispose([queries, keys, values, weights, shared, ...expected, ...actual]);
  });

  it('tensor count does not grow over forward and backward', () => {
    const c = CASES[3];
    const { queries, keys, values, mask, weights } = inputs(c, 50);
    const step = () => {
      const grads = tf.grads((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) =>
        tf.sum(tf.mul(chunkedGroupedAttention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, mask, c.kvHeads, 2), weights)),
      )([queries, keys, values]);
      tf.dispose(grads);
    };
    step();
    const count = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) step();
    expect(tf.memory().numTensors).toBe(count);
    tf.dispose([queries, keys, values, mask, weights]);
  });

  it('invalid chunk size and mask shape are rejected', () => {
    const c = CASES[0];
    const { queries, keys, values, mask, weights } = inputs(c, 60);
    expect(() => chunkedGroupedAttention(queries, keys, values, mask, c.kvHeads, 0)).toThrow(/chunk size must be a positive integer/);
    const wrongMask = tf.zeros([c.batch, 1, c.seq, c.seq]);
    expect(() => chunkedGroupedAttention(queries, keys, values, wrongMask, c.kvHeads, 4)).toThrow(/Attention mask has shape/);
    expect(() => chunkedGroupedAttention(queries, keys, values, mask, 3, 4)).toThrow(/key\/value heads/);
    tf.dispose([queries, keys, values, mask, weights, wrongMask]);
  });
});

describe('attentionChunkSize', () => {
  it('fits the score buffers in the budget', () => {
    const options = { batch: 2, heads: 8, keyLength: 1024 };
    const bytesPerQuery = 2 * 8 * 1024 * 4 * LIVE_SCORE_BUFFERS;
    expect(attentionChunkSize({ ...options, maxAttentionBytes: 64 * bytesPerQuery })).toBe(64);
    expect(attentionChunkSize({ ...options, maxAttentionBytes: 64 * bytesPerQuery - 1 })).toBe(63);
    expect(attentionChunkSize({ ...options, maxAttentionBytes: 256 * 1024 * 1024 })).toBe(Math.floor((256 * 1024 * 1024) / bytesPerQuery));
  });

  it('returns 1 when one query exceeds the budget', () => {
    expect(attentionChunkSize({ maxAttentionBytes: 10, batch: 1, heads: 1, keyLength: 4096 })).toBe(1);
  });

  it('rejects non-positive arguments', () => {
    expect(() => attentionChunkSize({ maxAttentionBytes: 0, batch: 1, heads: 1, keyLength: 8 })).toThrow(/memory budget must be positive/);
    expect(() => attentionChunkSize({ maxAttentionBytes: 1e6, batch: 0, heads: 1, keyLength: 8 })).toThrow(/batch must be a positive integer/);
    expect(() => attentionChunkSize({ maxAttentionBytes: 1e6, batch: 1, heads: 1.5, keyLength: 8 })).toThrow(/heads must be a positive integer/);
  });
});
