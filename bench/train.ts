/**
 * LoRA training benchmark of the tfjs engine against PyTorch on the same CPU.
 *
 *   npm run bench [-- --quick] [--scenario NAME[,NAME]] [--json FILE] [--no-torch] [--profile]
 *
 * Each scenario writes a random-weight Hugging Face folder of a real model shape, loads it with
 * `loadModel`, adds LoRA and trains with the real `Trainer`. Results and the method are
 * described in docs/BENCHMARKS.md.
 */
import { execSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend, parseBackendName } from '../src/engine/backend';
import { defaultTmpRoot, measureMatmulFlops, runScenario, type ScenarioResult } from './measure';
import { ensureTorch, runTorchPeer } from './peer';
import { buildScenarios, type Scenario } from './scenarios';

interface Options {
  quick: boolean;
  scenarios: string[] | null;
  json: string | null;
  torch: boolean;
  profile: boolean;
  backend: string | undefined;
  driftSteps: number;
  /** Set in a child run (see runScenarioInChild): the file that receives its one result. */
  scenarioResult: string | null;
}

const USAGE = `Usage: npm run bench -- [--quick] [--scenario NAME[,NAME]] [--json FILE] [--no-torch] [--profile] [--backend wasm|cpu] [--drift-steps N]
       npm run bench -- matmul     (GFLOP/s of the matmul layouts a LoRA step uses)
  --quick      shallower models, shorter sequences, fewer steps (about 3 minutes)
  --scenario   run only the named scenarios
  --json       also write the results as JSON to FILE
  --no-torch   skip the PyTorch peer
  --profile    print the per-kernel time of one profiled step per scenario
  --backend    force a tfjs backend (default: the engine's own choice)
  --drift-steps  trainer steps added per scenario to the tensor-count check (default 0: the timed
               and profiled steps only)`;

function parseOptions(argv: string[]): Options {
  const options: Options = { quick: false, scenarios: null, json: null, torch: true, profile: false, backend: undefined, driftSteps: 0, scenarioResult: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value.\n${USAGE}`);
      return next;
    };
    if (arg === '--quick') options.quick = true;
    else if (arg === '--scenario') options.scenarios = value().split(',');
    else if (arg === '--json') options.json = value();
    else if (arg === '--no-torch') options.torch = false;
    else if (arg === '--profile') options.profile = true;
    else if (arg === '--scenario-result') options.scenarioResult = value();
    else if (arg === '--backend') options.backend = value();
    else if (arg === '--drift-steps') {
      options.driftSteps = Number(value());
      if (!Number.isInteger(options.driftSteps) || options.driftSteps < 0) throw new Error(`--drift-steps must be a non-negative integer. Received: ${argv[i]}.`);
    }
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else throw new Error(`Unknown option ${arg}.\n${USAGE}`);
  }
  return options;
}

function machineInfo(): Record<string, unknown> {
  const cpuModel = /model name\s*:\s*(.+)/.exec(fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '')?.[1] ?? os.cpus()[0]?.model;
  let nproc = os.cpus().length;
  try {
    nproc = Number(execSync('nproc', { encoding: 'utf8' }).trim());
  } catch {
    // os.cpus() stands in where nproc is missing.
  }
  return { nproc, cpu_model: cpuModel, memory_bytes: os.totalmem(), platform: `${process.platform}-${process.arch}`, node: process.versions.node, tfjs: tf.version_core };
}

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

function formatNumber(value: number | undefined, digits = 0): string {
  return value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits);
}

function formatTable(results: ScenarioResult[]): string {
  const header = ['scenario', 'ckpt', 'tok/s', 'step ms', 'step CPU ms', 'fwd ms', 'bwd ms', 'opt ms', 'peak MiB', 'RSS MiB', 'est. MiB', 'est. error', 'B/param', 'drift', 'MFU', 'HFU', 'torch tok/s', 'ours/torch'];
  const rows = results.map((r) =>
    r.available
      ? [
          r.name,
          r.gradient_checkpointing ? 'yes' : 'no',
          formatNumber(r.tokens_per_s, 1),
          formatNumber(r.step_ms),
          formatNumber(r.step_cpu_ms),
          formatNumber(r.forward_ms),
          formatNumber(r.backward_ms),
          formatNumber(r.optimizer_ms),
          formatNumber((r.peak_bytes ?? NaN) / 2 ** 20),
          formatNumber((r.peak_rss_bytes ?? NaN) / 2 ** 20),
          formatNumber((r.estimate_bytes ?? NaN) / 2 ** 20),
          r.estimate_error === undefined ? '-' : `${r.estimate_error >= 0 ? '+' : ''}${(100 * r.estimate_error).toFixed(0)}%`,
          formatNumber(r.base_weight_bytes_per_param, 2),
          r.tensor_drift === undefined ? '-' : `${r.tensor_drift}/${r.drift_steps}`,
          r.mfu === undefined ? '-' : `${(100 * r.mfu).toFixed(1)}%`,
          r.hfu === undefined ? '-' : `${(100 * r.hfu).toFixed(1)}%`,
          formatNumber(r.torch_tokens_per_s, 1),
          formatNumber(r.ratio_vs_torch, 2),
        ]
      : [r.name, r.note ?? 'not available', '', '', '', '', '', '', '', '', '', '', '', '', '', '', '', ''],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.filter((row) => row[2] !== '').map((row) => row[i].length)));
  const line = (cells: string[]) => (cells[2] === '' && cells[1] !== '' ? `| ${cells[0].padEnd(widths[0])} | ${cells[1]}` : `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`);
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

function formatProfile(result: ScenarioResult): string {
  if (!result.profile) return '';
  const { wall_ms: wall, kernel_ms: kernelMs, kernels, shapes } = result.profile;
  const lines = [`${result.name}: profiled step ${wall.toFixed(0)} ms wall, ${kernelMs.toFixed(0)} ms in kernels (${((100 * kernelMs) / wall).toFixed(1)}%)`];
  for (const k of kernels.slice(0, 15)) {
    lines.push(`  ${k.kernel.padEnd(24)} ${k.ms.toFixed(0).padStart(8)} ms ${((100 * k.ms) / kernelMs).toFixed(1).padStart(5)}%  ${String(k.calls).padStart(6)} calls`);
  }
  lines.push('  largest kernel calls by input shapes:');
  for (const k of shapes.slice(0, 15)) {
    lines.push(`  ${k.kernel.padEnd(48)} ${k.ms.toFixed(0).padStart(8)} ms ${String(k.calls).padStart(6)} calls`);
  }
  return lines.join('\n');
}

/**
 * Runs one scenario in a child process of this script. The wasm heap never shrinks, so in one
 * process a scenario would start with the heap the previous one grew, and the RSS column would
 * carry it too.
 */
function runScenarioInChild(scenario: Scenario, options: Options, tmpRoot: string): ScenarioResult {
  const resultFile = path.join(tmpRoot, `${scenario.name}.result.json`);
  const args = [...process.execArgv, process.argv[1], '--scenario', scenario.name, '--scenario-result', resultFile, '--drift-steps', String(options.driftSteps)];
  if (options.quick) args.push('--quick');
  if (options.profile) args.push('--profile');
  if (options.backend) args.push('--backend', options.backend);
  // runScenario catches a failure inside the step (an exhausted wasm heap included) and writes it
  // as the result. A missing file means that the child process itself died.
  const child = spawnSync(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (fs.existsSync(resultFile)) return JSON.parse(fs.readFileSync(resultFile, 'utf8')) as ScenarioResult;
  return { name: scenario.name, available: false, note: `failed: the child process ended with ${child.signal ?? `exit code ${child.status}`} before writing a result` };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const report = await selectBackend({ force: parseBackendName(options.backend), log });
  // The wasm backend runs single-threaded in Node (tfjs-backend-wasm 4.x turns threads off there),
  // and the cpu backend is plain JavaScript: both use one core.
  const threads = report.threads ?? 1;

  const all = buildScenarios(options.quick, options.driftSteps);
  const unknown = (options.scenarios ?? []).filter((name) => !all.some((s) => s.name === name));
  if (unknown.length) throw new Error(`Unknown scenario ${unknown.join(', ')}. Known: ${all.map((s) => s.name).join(', ')}.`);
  const scenarios = options.scenarios ? all.filter((s) => options.scenarios!.includes(s.name)) : all;

  if (options.scenarioResult) {
    // A child run: one scenario, its result to a file for the parent.
    const childRoot = defaultTmpRoot();
    try {
      const result = await runScenario(scenarios[0], childRoot, log);
      if (options.profile && result.available) process.stdout.write(formatProfile(result) + '\n');
      fs.writeFileSync(options.scenarioResult, JSON.stringify(result));
    } finally {
      fs.rmSync(childRoot, { recursive: true, force: true });
    }
    return;
  }

  const torch = options.torch ? ensureTorch(log) : { available: false, note: 'skipped (--no-torch)' };
  if (!torch.available) log(`PyTorch peer: ${torch.note}`);

  log(`measuring the ${report.chosen} backend's 1024×1024 matmul`);
  const matmulFlops = measureMatmulFlops();
  log(`matmul: ${(matmulFlops / 1e9).toFixed(2)} GFLOP/s`);

  const tmpRoot = defaultTmpRoot();
  const results: ScenarioResult[] = [];
  try {
    for (const scenario of scenarios) {
      const result = runScenarioInChild(scenario, options, tmpRoot);
      if (result.available && torch.available) {
        log(`${scenario.name}: PyTorch peer (${threads} thread${threads === 1 ? '' : 's'})`);
        const peer = runTorchPeer(scenario, threads, result.gradient_checkpointing === true, log);
        if (peer) {
          result.torch_tokens_per_s = peer.tokens_per_s;
          result.torch_step_ms = peer.step_ms;
          result.ratio_vs_torch = result.tokens_per_s! / peer.tokens_per_s;
        }
      }
      results.push(result);
    }
  } finally {
    fs.rmSync(tmpRoot, { recursive: true, force: true });
  }

  const machine = { ...machineInfo(), torch: torch.available ? torch.version : null, threads, matmul_flops_per_s: matmulFlops };
  process.stdout.write(`\nbackend ${report.chosen} (${threads} thread${threads === 1 ? '' : 's'}), matmul ${(matmulFlops / 1e9).toFixed(2)} GFLOP/s, ${options.quick ? 'quick' : 'full'} mode\n`);
  process.stdout.write(formatTable(results) + '\n');

  if (options.json) {
    const scenariosJson = results.map((r) => ({ ...r, profile: r.profile ? { ...r.profile, kernels: r.profile.kernels.slice(0, 25) } : undefined }));
    fs.writeFileSync(options.json, JSON.stringify({ date: new Date().toISOString(), mode: options.quick ? 'quick' : 'full', machine, backend: report.chosen, scenarios: scenariosJson }, null, 2) + '\n');
    log(`wrote ${options.json}`);
  }
}

main().catch((error) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
