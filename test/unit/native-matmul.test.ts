import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend, summarizeReport, type BackendReport } from '../../src/engine/backend';
import { loadBlasBinding, nativeMatMulStatus } from '../../src/engine/backend/native-matmul';

// The binding is optional: without a C compiler or OpenBLAS at install time these cases skip.
const available = loadBlasBinding().binding !== undefined;

interface Case {
  name: string;
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
}

const CASES: Case[] = [
  { name: 'plain 2-D', a: [5, 7], b: [7, 3] },
  { name: 'transposeA', a: [7, 5], b: [7, 3], transposeA: true },
  { name: 'transposeB', a: [5, 7], b: [3, 7], transposeB: true },
  { name: 'both transposed', a: [7, 5], b: [3, 7], transposeA: true, transposeB: true },
  { name: 'batch 3', a: [3, 4, 6], b: [3, 6, 2] },
  { name: 'batch 3, transposeB', a: [3, 4, 6], b: [3, 2, 6], transposeB: true },
  { name: 'a broadcast over b batch', a: [1, 4, 6], b: [3, 6, 2] },
  { name: 'b broadcast over a batch', a: [2, 3, 4, 6], b: [6, 5] },
  { name: 'rank 4', a: [2, 3, 4, 5], b: [2, 3, 5, 6] },
  { name: 'inner size 1', a: [4, 1], b: [1, 3] },
  { name: 'LoRA rank product', a: [64, 96], b: [16, 96], transposeB: true },
];

/** Row-major `op(a) · op(b)` over the last two axes, accumulated in float64. */
function referenceMatMul(c: Case, a: Float32Array, b: Float32Array): number[] {
  const m = c.transposeA ? c.a[c.a.length - 1] : c.a[c.a.length - 2];
  const k = c.transposeA ? c.a[c.a.length - 2] : c.a[c.a.length - 1];
  const n = c.transposeB ? c.b[c.b.length - 2] : c.b[c.b.length - 1];
  const batchA = c.a.slice(0, -2).reduce((x, y) => x * y, 1);
  const batchB = c.b.slice(0, -2).reduce((x, y) => x * y, 1);
  const out: number[] = [];
  for (let i = 0; i < Math.max(batchA, batchB); i++) {
    const aOffset = (batchA === 1 ? 0 : i) * m * k;
    const bOffset = (batchB === 1 ? 0 : i) * k * n;
    for (let row = 0; row < m; row++) {
      for (let col = 0; col < n; col++) {
        let sum = 0;
        for (let p = 0; p < k; p++) {
          const left = a[aOffset + (c.transposeA ? p * m + row : row * k + p)];
          const right = b[bOffset + (c.transposeB ? col * k + p : p * n + col)];
          sum += left * right;
        }
        out.push(sum);
      }
    }
  }
  return out;
}

describe.skipIf(!available)('native BatchMatMul on wasm', () => {
  let report: BackendReport;
  const previous = process.env.LORA_STUDIO_NATIVE_MATMUL;

  beforeAll(async () => {
    process.env.LORA_STUDIO_NATIVE_MATMUL = '1';
    report = await selectBackend({ force: 'wasm' });
  });

  afterAll(() => {
    if (previous === undefined) delete process.env.LORA_STUDIO_NATIVE_MATMUL;
    else process.env.LORA_STUDIO_NATIVE_MATMUL = previous;
  });

  it('backend report names the BLAS library', () => {
    expect(report.nativeMatMul?.enabled).toBe(true);
    expect(nativeMatMulStatus()?.enabled).toBe(true);
    expect(summarizeReport(report)).toMatch(/native matmul: \S+/);
  });

  for (const c of CASES) {
    it(`${c.name} matches a float64 reference`, () => {
      const a = tf.randomUniform(c.a, -1, 1, 'float32', 11);
      const b = tf.randomUniform(c.b, -1, 1, 'float32', 12);
      const expected = referenceMatMul(c, a.dataSync() as Float32Array, b.dataSync() as Float32Array);

      const product = tf.matMul(a, b, c.transposeA, c.transposeB);
      const m = c.transposeA ? c.a[c.a.length - 1] : c.a[c.a.length - 2];
      const n = c.transposeB ? c.b[c.b.length - 2] : c.b[c.b.length - 1];
      const batchShape = tf.broadcast_util.assertAndGetBroadcastShape(c.a.slice(0, -2), c.b.slice(0, -2));
      expect(product.shape).toEqual([...batchShape, m, n]);

      const actual = Array.from(product.dataSync());
      expect(actual.length).toBe(expected.length);
      const maxError = Math.max(...actual.map((value, i) => Math.abs(value - expected[i])));
      expect(maxError).toBeLessThanOrEqual(1e-5);
      tf.dispose([a, b, product]);
    });
  }

  it('empty inner dimension gives zeros', () => {
    const product = tf.matMul(tf.zeros([3, 0]), tf.zeros([0, 2]));
    expect(product.shape).toEqual([3, 2]);
    expect(Array.from(product.dataSync())).toEqual([0, 0, 0, 0, 0, 0]);
    product.dispose();
  });

  it('gradients of a transposed product match the reference', () => {
    const a = tf.tensor2d([[1, 2, 3], [4, 5, 6]]); // [2, 3]
    const b = tf.tensor2d([[1, 0, -1], [2, 1, 0]]); // [2, 3], used as bᵀ [3, 2]
    const [da, db] = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.matMul(x, y, false, true)))([a, b]);
    // d/da of sum(a·bᵀ) is ones[2, 2] · b; d/db is onesᵀ · a.
    expect(Array.from(da.dataSync())).toEqual([3, 1, -1, 3, 1, -1]);
    expect(Array.from(db.dataSync())).toEqual([5, 7, 9, 5, 7, 9]);
    tf.dispose([a, b, da, db]);
  });

  it('tensor count is unchanged after products', () => {
    const a = tf.randomUniform([2, 8, 4], -1, 1, 'float32', 3);
    const b = tf.randomUniform([2, 4, 8], -1, 1, 'float32', 4);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) tf.matMul(a, b).dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([a, b]);
  });
});
