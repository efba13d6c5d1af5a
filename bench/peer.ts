/**
 * The PyTorch peer: the same LoRA step in plain PyTorch on this CPU (bench/torch_peer.py), run
 * with Debian's python3-torch under the system Python.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Scenario } from './scenarios';

/** Debian's python3-torch installs into the system interpreter, not a pyenv or venv one. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export interface TorchInfo {
  available: boolean;
  version?: string;
  note?: string;
}

export interface TorchResult {
  tokens_per_s: number;
  step_ms: number;
  forward_ms: number;
  backward_ms: number;
  optimizer_ms: number;
}

function torchVersion(): string | undefined {
  const probe = spawnSync(SYSTEM_PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  return probe.status === 0 ? probe.stdout.trim() : undefined;
}

/**
 * Returns the torch version, installing python3-torch with apt-get when it is missing and apt
 * offers it (the apt install needs root and Debian's package mirror).
 */
export function ensureTorch(log: (line: string) => void): TorchInfo {
  if (!fs.existsSync(SYSTEM_PYTHON)) return { available: false, note: `${SYSTEM_PYTHON} not found` };
  let version = torchVersion();
  if (version) {
    ensureOptimizedBlas(log);
    return { available: true, version };
  }

  const policy = spawnSync('apt-cache', ['policy', 'python3-torch'], { encoding: 'utf8' });
  const candidate = /Candidate:\s*(\S+)/.exec(policy.stdout ?? '')?.[1];
  if (!candidate || candidate === '(none)') {
    return { available: false, note: 'python3-torch is not installed and apt has no candidate for it' };
  }
  log(`installing python3-torch ${candidate} with apt-get (PyTorch peer)`);
  const install = spawnSync('apt-get', ['install', '-y', 'python3-torch'], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (install.status !== 0) {
    return { available: false, note: `apt-get install python3-torch failed: ${(install.stderr ?? '').trim().split('\n').pop()}` };
  }
  version = torchVersion();
  if (!version) return { available: false, note: 'python3-torch installed but torch does not import' };
  ensureOptimizedBlas(log);
  return { available: true, version };
}

const BLAS_ALTERNATIVE = '/etc/alternatives/libblas.so.3-x86_64-linux-gnu';

/**
 * Debian's python3-torch links libblas.so.3, which is the reference BLAS (about 1 GFLOP/s
 * here) until an optimized one is installed; OpenBLAS takes over the alternative on install.
 */
function ensureOptimizedBlas(log: (line: string) => void): void {
  if (!fs.existsSync(BLAS_ALTERNATIVE) || !fs.realpathSync(BLAS_ALTERNATIVE).includes('/blas/libblas.so')) return;
  log('installing libopenblas0-pthread with apt-get: libblas.so.3 is the reference BLAS');
  const install = spawnSync('apt-get', ['install', '-y', 'libopenblas0-pthread'], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (install.status !== 0) log(`apt-get install libopenblas0-pthread failed; the PyTorch peer runs on the reference BLAS`);
}

/**
 * Runs the peer for one scenario with `threads` intra-op threads, with gradient checkpointing per
 * block when the engine's step used it; null when it fails.
 */
export function runTorchPeer(scenario: Scenario, threads: number, checkpointing: boolean, log: (line: string) => void): TorchResult | null {
  const spec = {
    ...scenario.shape,
    seq: scenario.seq,
    batch: scenario.batch,
    rank: scenario.rank,
    lora_dropout: 0.05,
    steps: scenario.steps,
    threads,
    checkpointing,
  };
  const script = path.join(path.dirname(new URL(import.meta.url).pathname), 'torch_peer.py');
  const peerScript = fs.existsSync(script) ? script : path.resolve('bench', 'torch_peer.py');
  try {
    const output = execFileSync(SYSTEM_PYTHON, [peerScript, JSON.stringify(spec)], {
      encoding: 'utf8',
      env: { ...process.env, OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) },
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 16 * 1024 * 1024,
    });
    return JSON.parse(output.trim().split('\n').pop()!) as TorchResult;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? String(error);
    log(`${scenario.name}: PyTorch peer failed: ${stderr.trim().split('\n').pop()}`);
    return null;
  }
}
