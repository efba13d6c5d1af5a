// Responsiveness while training: round-trip times of StudioApi requests to the web bridge while a
// run trains in its worker process, against the same requests with nothing training.
//
//   npm run bench:latency [-- --seconds 20 --json FILE]
//
// The bridge process plays the part of Electron's main process: both hand training to a separate
// process and serve requests on their own event loop. Target: p99 under 50 ms while training.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const index = args.indexOf(`--${name}`);
  return index >= 0 ? args[index + 1] : fallback;
};
const seconds = Number(option('seconds', '20'));
const jsonFile = option('json', undefined);
const intervalMs = 25;

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-studio-latency-'));
const server = spawn(process.execPath, [path.join(root, 'out', 'node', 'server.mjs'), '--data-dir', dataDir, '--port', '0'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
server.stderr.on('data', () => {});

try {
  const openUrl = await new Promise((resolve, reject) => {
    let output = '';
    server.stdout.on('data', (chunk) => {
      output += chunk;
      const match = /LoRA Studio web UI: (\S+)/.exec(output);
      if (match) resolve(match[1]);
    });
    server.on('exit', (code) => reject(new Error(`the bridge exited with code ${code} before printing its URL`)));
  });
  const url = new URL(openUrl);
  const token = url.searchParams.get('token');
  const call = async (method, body = {}) => {
    const response = await fetch(`${url.origin}/api/${method}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-studio-token': token }, body: JSON.stringify(body) });
    const payload = await response.json();
    if (!response.ok) throw new Error(`${method}: ${JSON.stringify(payload)}`);
    return payload.value;
  };

  const measure = async (label) => {
    const times = [];
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      for (const method of ['runs/list', 'system/info']) {
        const started = performance.now();
        await call(method);
        times.push(performance.now() - started);
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
    times.sort((a, b) => a - b);
    const pick = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    const result = { label, requests: times.length, p50_ms: pick(0.5), p99_ms: pick(0.99), max_ms: times[times.length - 1] };
    process.stdout.write(`${label.padEnd(16)} requests ${String(result.requests).padStart(5)}  p50 ${result.p50_ms.toFixed(1)} ms  p99 ${result.p99_ms.toFixed(1)} ms  max ${result.max_ms.toFixed(1)} ms\n`);
    return result;
  };

  const idle = await measure('idle');
  const dataset = await call('datasets/import', { path: path.join(root, 'resources', 'demo-data', 'chat-storyteller.jsonl') });
  const config = {
    modelPath: path.join(root, 'resources', 'demo-model'),
    datasetId: dataset.id,
    validationSplit: 0.1,
    method: 'lora',
    lora: { r: 16, loraAlpha: 32, loraDropout: 0.05, targetModules: 'all-linear', useRslora: false, initLoraWeights: 'kaiming' },
    learningRate: 3e-3, weightDecay: 0, adamBeta1: 0.9, adamBeta2: 0.999, adamEpsilon: 1e-8,
    schedule: 'cosine', warmupSteps: 5, maxSteps: 100000, epochs: 1, batchSize: 8, gradientAccumulationSteps: 1,
    maxGradNorm: 1, maxSeqLength: 128, trainOnPrompt: false, packing: false, evalSteps: 20, saveSteps: 0, seed: 42,
    gradientCheckpointing: false,
  };
  const run = await call('runs/start', { config });
  // Wait until the worker reports training steps, so the measurement overlaps real work.
  for (let i = 0; i < 600; i++) {
    const detail = await call('runs/get', { id: run.id });
    if (detail.metrics.length > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const training = await measure('while training');
  const detail = await call('runs/get', { id: run.id });
  await call('runs/cancel', { id: run.id });

  const report = { machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.versions.node }, interval_ms: intervalMs, seconds, steps_during_measurement: detail.metrics.length, idle, training };
  process.stdout.write(`training steps reported during the measurement: ${detail.metrics.length}\n`);
  if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(report, null, 2) + '\n');
} finally {
  server.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 500));
  fs.rmSync(dataDir, { recursive: true, force: true });
}
