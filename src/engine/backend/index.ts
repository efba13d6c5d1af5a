/**
 * Backend selection for the training engine.
 *
 * Order of preference: `tensorflow` from @tensorflow/tfjs-node-gpu (CUDA), `tensorflow` from
 * @tensorflow/tfjs-node (CPU, oneDNN), `wasm` (SIMD), then the pure-JS `cpu` backend. The native
 * packages are optional dependencies because their install downloads libtensorflow, which fails
 * offline or on a CUDA mismatch. Each one skipped is recorded with the reason and a fix.
 */
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// tfjs-core registers gradient functions only when asked; training needs all of them.
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { StudioError } from '../../shared/errors';
import { enableNativeMatMul, type NativeMatMulStatus } from './native-matmul';
import { shareIdentityOnWasm } from './wasm-identity';

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

export const BACKEND_ORDER: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

/** One backend that was tried, with why it was not used. */
export interface BackendAttempt {
  name: BackendName;
  ok: boolean;
  reason?: string;
  fix?: string;
}

/** The backend `selectBackend` chose, with the reason each better one was skipped. */
export interface BackendReport {
  chosen: BackendName;
  /** The tfjs backend name registered for the chosen one (`tensorflow`, `wasm`, `cpu`). */
  tfBackend: string;
  forced: boolean;
  attempts: BackendAttempt[];
  simd?: boolean;
  threads?: number;
  /** Whether wasm matrix products run in native BLAS (on when the binding loads; `LORA_STUDIO_NATIVE_MATMUL=0` turns it off). */
  nativeMatMul?: NativeMatMulStatus;
  tfjsVersion: string;
  nodeVersion: string;
  platform: string;
}

export interface SelectBackendOptions {
  /** Backend to use instead of the first one that loads; also read from `LORA_STUDIO_BACKEND`. */
  force?: BackendName;
  /** Called once with the one-line summary. */
  log?: (line: string) => void;
}

const require = createRequire(import.meta.url);

const NATIVE_PACKAGES: Record<'tensorflow-gpu' | 'tensorflow', string> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
};

let current: BackendReport | undefined;

/** Returns the report of the backend chosen in this process, if one was chosen. */
export function backendReport(): BackendReport | undefined {
  return current;
}

/**
 * Chooses and activates a backend. Calling it again returns the first report unless a
 * different backend is forced.
 */
export async function selectBackend(options: SelectBackendOptions = {}): Promise<BackendReport> {
  const forced = options.force ?? parseBackendName(process.env.LORA_STUDIO_BACKEND);
  if (current && (!forced || forced === current.chosen)) return current;

  const candidates = forced ? [forced] : BACKEND_ORDER;
  const attempts: BackendAttempt[] = [];
  for (const name of candidates) {
    const attempt = await tryBackend(name);
    attempts.push(attempt);
    if (attempt.ok) {
      current = buildReport(name, Boolean(forced), attempts);
      options.log?.(summarizeReport(current));
      return current;
    }
  }
  const detail = attempts.map((a) => `${a.name}: ${a.reason}`).join('; ');
  throw new Error(`No tfjs backend could be started (${detail}).`);
}

/** Parses a backend name from user input; undefined for empty input. */
export function parseBackendName(value: string | undefined): BackendName | undefined {
  if (!value) return undefined;
  const normalized = value.trim().toLowerCase();
  if ((BACKEND_ORDER as readonly string[]).includes(normalized)) return normalized as BackendName;
  if (normalized === 'gpu' || normalized === 'cuda') return 'tensorflow-gpu';
  if (normalized === 'node' || normalized === 'tfjs-node') return 'tensorflow';
  throw new Error(
    `Unknown backend "${value}". Use one of: ${BACKEND_ORDER.join(', ')} (or unset LORA_STUDIO_BACKEND).`,
  );
}

/** Formats one line: the chosen backend and, for each better one skipped, the reason. */
export function summarizeReport(report: BackendReport): string {
  const skipped = report.attempts.filter((a) => !a.ok).map((a) => `${a.name} skipped: ${a.reason}`);
  let nativeNote = '';
  if (report.nativeMatMul) nativeNote = `, native matmul${report.nativeMatMul.enabled ? '' : ' off'}: ${report.nativeMatMul.detail}`;
  const extras = report.chosen === 'wasm' ? ` (simd=${report.simd}, threads=${report.threads}${nativeNote})` : '';
  const head = `backend ${report.chosen}${extras}${report.forced ? ' (forced)' : ''}`;
  return skipped.length ? `${head}; ${skipped.join('; ')}` : head;
}

async function tryBackend(name: BackendName): Promise<BackendAttempt> {
  try {
    switch (name) {
      case 'tensorflow-gpu':
      case 'tensorflow':
        return await tryNative(name);
      case 'wasm':
        return await tryWasm();
      case 'cpu':
        await tf.setBackend('cpu');
        await tf.ready();
        return { name, ok: true };
    }
  } catch (error) {
    return { name, ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

async function tryNative(name: 'tensorflow-gpu' | 'tensorflow'): Promise<BackendAttempt> {
  const pkg = NATIVE_PACKAGES[name];
  try {
    require.resolve(`${pkg}/package.json`);
  } catch {
    return {
      name,
      ok: false,
      reason: `${pkg} is not installed`,
      fix:
        name === 'tensorflow-gpu'
          ? `npm install ${pkg} on a machine with CUDA 11.2 and cuDNN 8.1 (tfjs-node-gpu 4.x links against them)`
          : `npm install ${pkg} (its install downloads libtensorflow, so it needs network access)`,
    };
  }
  try {
    require(pkg);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { name, ok: false, reason: describeNativeLoadError(message), fix: nativeFix(name, message) };
  }
  await tf.setBackend('tensorflow');
  await tf.ready();
  return { name, ok: true };
}

function describeNativeLoadError(message: string): string {
  const library = /lib[\w.-]+\.so[\w.]*/.exec(message)?.[0];
  if (library) return `${library} not found`;
  if (/tfjs_binding|napi/i.test(message)) return 'the native binding was not built (libtensorflow download failed at install)';
  return message.split('\n')[0];
}

function nativeFix(name: BackendName, message: string): string {
  if (/libcudart|libcudnn|libcublas/.test(message)) {
    return 'install CUDA 11.2 and cuDNN 8.1 and add their lib folders to LD_LIBRARY_PATH';
  }
  const pkg = NATIVE_PACKAGES[name as 'tensorflow'];
  return `reinstall with network access: npm rebuild ${pkg}`;
}

async function tryWasm(): Promise<BackendAttempt> {
  const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep;
  setWasmPaths(dist);
  const ok = await tf.setBackend('wasm');
  if (!ok) return { name: 'wasm', ok: false, reason: 'the WebAssembly module failed to initialize' };
  await tf.ready();
  return { name: 'wasm', ok: true };
}

function buildReport(chosen: BackendName, forced: boolean, attempts: BackendAttempt[]): BackendReport {
  const report: BackendReport = {
    chosen,
    tfBackend: tf.getBackend(),
    forced,
    attempts,
    tfjsVersion: tf.version_core,
    nodeVersion: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
  };
  if (chosen === 'wasm') {
    shareIdentityOnWasm();
    report.simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
    report.threads = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT') ? undefined : 1;
    if (process.env.LORA_STUDIO_NATIVE_MATMUL !== '0') {
      report.nativeMatMul = enableNativeMatMul(parseBlasThreads(process.env.LORA_STUDIO_BLAS_THREADS) ?? defaultBlasThreads());
    }
  }
  return report;
}

/**
 * Half the logical CPUs, at least one: the other half stays free for the app's main process and
 * the hyperthread siblings. On a busy 2-core machine one thread measured faster than two
 * (docs/BENCHMARKS.md).
 */
function defaultBlasThreads(): number {
  return Math.max(1, Math.floor(os.cpus().length / 2));
}

/** Parses `LORA_STUDIO_BLAS_THREADS`; undefined when unset. */
function parseBlasThreads(value: string | undefined): number | undefined {
  if (!value) return undefined;
  const count = Number(value);
  if (!Number.isInteger(count) || count < 1) {
    throw new StudioError(
      'INVALID_ARGUMENT',
      `LORA_STUDIO_BLAS_THREADS must be a positive integer, got "${value}".`,
      'Set it to the number of BLAS threads, or unset it to let the BLAS library choose.',
    );
  }
  return count;
}
