/**
 * Matmul layouts on the active backend: `npm run bench -- matmul`.
 *
 * tfjs-backend-wasm 4.x sends a BatchMatMul to XNNPACK only when neither operand is transposed
 * and both have batch size 1; every other form runs a scalar blocked loop. This prints the
 * GFLOP/s of the shapes a LoRA step uses, in each layout, so the cost of a layout is measured
 * and not guessed.
 */
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../src/engine/backend';

interface Case {
  label: string;
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
}

const CASES: Case[] = [
  { label: 'square 1024 (reference)', a: [1024, 1024], b: [1024, 1024] },
  { label: 'linear x·W', a: [1024, 768], b: [768, 3072] },
  { label: 'linear dY·Wᵀ (transposeB)', a: [1024, 3072], b: [768, 3072], transposeB: true },
  { label: 'linear dY·Wᵀ (Wᵀ stored)', a: [1024, 3072], b: [3072, 768] },
  { label: 'LoRA x·Aᵀ (transposeB)', a: [1024, 768], b: [16, 768], transposeB: true },
  { label: 'LoRA x·Aᵀ (Aᵀ stored)', a: [1024, 768], b: [768, 16] },
  { label: 'LoRA dA = dDᵀ·x (transposeA)', a: [1024, 16], b: [1024, 768], transposeA: true },
  { label: 'LM head h·Eᵀ (transposeB)', a: [256, 768], b: [50257, 768], transposeB: true },
  { label: 'LM head h·Eᵀ (Eᵀ stored)', a: [256, 768], b: [768, 50257] },
  { label: 'LM head dL·E', a: [256, 50257], b: [50257, 768] },
  { label: 'attention QKᵀ batched', a: [48, 256, 64], b: [48, 256, 64], transposeB: true },
  { label: 'attention QKᵀ one head, Kᵀ stored', a: [256, 64], b: [64, 256] },
];

function gflops(c: Case, repeats: number): number {
  const a = tf.randomUniform(c.a, -1, 1, 'float32', 1);
  const b = tf.randomUniform(c.b, -1, 1, 'float32', 2);
  const times: number[] = [];
  for (let i = 0; i < repeats + 1; i++) {
    const start = performance.now();
    const out = tf.matMul(a, b, c.transposeA, c.transposeB);
    out.dataSync();
    if (i > 0) times.push(performance.now() - start);
    out.dispose();
  }
  const m = c.transposeA ? c.a[c.a.length - 1] : c.a[c.a.length - 2];
  const k = c.transposeA ? c.a[c.a.length - 2] : c.a[c.a.length - 1];
  const n = c.transposeB ? c.b[c.b.length - 2] : c.b[c.b.length - 1];
  const batch = c.a.length === 3 ? c.a[0] : 1;
  a.dispose();
  b.dispose();
  times.sort((x, y) => x - y);
  return (2 * batch * m * k * n) / (times[0] / 1000) / 1e9;
}

async function main(): Promise<void> {
  const report = await selectBackend({ log: (line) => process.stderr.write(`[bench] ${line}\n`) });
  process.stdout.write(`backend ${report.chosen}; best of 3 runs after one warm-up\n`);
  for (const c of CASES) {
    const shape = `[${c.a}]${c.transposeA ? 'ᵀ' : ''} × [${c.b}]${c.transposeB ? 'ᵀ' : ''}`;
    process.stdout.write(`${c.label.padEnd(36)} ${shape.padEnd(30)} ${gflops(c, 3).toFixed(2).padStart(7)} GFLOP/s\n`);
  }
}

main().catch((error) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
