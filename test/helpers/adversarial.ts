/**
 * Shared setup of the bad-input tests: temporary folders, edited copies of the fixture models and
 * adapters, error capture, a scripted worker transport, a Studio seeded with a completed run, and
 * a way to run the bundled CLI.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StudioError } from '../../src/shared/errors';
import type { WorkerMessage, WorkerTransport } from '../../src/shared/protocol';
import type { RunRecord } from '../../src/shared/records';
import { DEFAULT_TRAIN_CONFIG, type TrainConfig } from '../../src/shared/train-config';
import { silentLogger } from '../../src/services/jobs';
import type { RunStore } from '../../src/services/store';
import { Studio } from '../../src/services/studio';
import { FIXTURES, REPO_ROOT, type FixtureModel } from './fixtures';

export const CLI_BUNDLE = path.join(REPO_ROOT, 'out', 'node', 'cli.mjs');

/** Pre-tokenized rows for the fixture models (vocabulary 320, no tokenizer). */
export const FIXTURE_VOCAB_SIZE = 320;

export function makeScratch(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `lora-adversarial-${prefix}-`));
}

/** Copies a fixture model into `parent/name` and lets `edit` change its parsed config.json. */
export function copyModel(parent: string, name: string, model: FixtureModel, edit?: (config: Record<string, unknown>) => void): string {
  const dir = path.join(parent, name);
  fs.cpSync(path.join(FIXTURES, 'models', model), dir, { recursive: true });
  if (edit) {
    const file = path.join(dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    edit(config);
    fs.writeFileSync(file, JSON.stringify(config));
  }
  return dir;
}

/** Copies the fixture adapter of `model` into `parent/name` and lets `edit` change adapter_config.json. */
export function copyAdapter(parent: string, name: string, model: FixtureModel, edit?: (config: Record<string, unknown>) => void): string {
  const dir = path.join(parent, name);
  fs.cpSync(path.join(FIXTURES, 'adapters', `${model}-lora`), dir, { recursive: true });
  if (edit) {
    const file = path.join(dir, 'adapter_config.json');
    const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    edit(config);
    fs.writeFileSync(file, JSON.stringify(config));
  }
  return dir;
}

/** Writes a safetensors file from a raw header object and data bytes; `declaredLength` overrides the length field. */
export function writeRawSafetensors(file: string, header: unknown, data: Buffer, declaredLength?: bigint): string {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(declaredLength ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([length, json, data]));
  return file;
}

/** Runs `action` and returns the StudioError it throws; fails on success or on any other error. */
export function catchStudioError(action: () => unknown): StudioError {
  let thrown: unknown;
  try {
    action();
  } catch (error) {
    thrown = error;
  }
  return expectStudioError(thrown);
}

export async function catchStudioErrorAsync(action: () => Promise<unknown>): Promise<StudioError> {
  let thrown: unknown;
  try {
    await action();
  } catch (error) {
    thrown = error;
  }
  return expectStudioError(thrown);
}

function expectStudioError(thrown: unknown): StudioError {
  if (thrown === undefined) throw new Error('expected a StudioError, but the call succeeded');
  if (!(thrown instanceof StudioError)) {
    const described = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : JSON.stringify(thrown);
    throw new Error(`expected a StudioError, got ${described}`);
  }
  return thrown;
}

/** Writes JSON Lines of pre-tokenized rows with ids below `vocab`. */
export function writeTokenRows(file: string, rows: number, length: number, vocab = FIXTURE_VOCAB_SIZE, extra?: (ids: number[]) => Record<string, unknown>): string {
  const lines: string[] = [];
  for (let row = 0; row < rows; row++) {
    const ids = Array.from({ length }, (_, i) => (row * 31 + i * 7) % vocab);
    lines.push(JSON.stringify({ input_ids: ids, ...(extra ? extra(ids) : {}) }));
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

/**
 * A worker transport driven by the test: `emit` delivers a worker message to the job manager and
 * `exit` reports the process end, with no process behind it.
 */
export class ScriptedTransport implements WorkerTransport {
  readonly pid = 4242;
  readonly sent: unknown[] = [];
  private messageListeners: ((message: WorkerMessage) => void)[] = [];
  private exitListeners: ((code: number | null, signal: string | null) => void)[] = [];

  send(message: unknown): void {
    this.sent.push(message);
  }

  onMessage(listener: (message: WorkerMessage) => void): void {
    this.messageListeners.push(listener);
  }

  onExit(listener: (code: number | null, signal: string | null) => void): void {
    this.exitListeners.push(listener);
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    this.exit(null, signal);
  }

  emit(message: WorkerMessage): void {
    for (const listener of this.messageListeners) listener(message);
  }

  exit(code: number | null, signal: string | null): void {
    const listeners = this.exitListeners;
    this.exitListeners = [];
    for (const listener of listeners) listener(code, signal);
  }
}

export function trainConfigFor(modelPath: string, overrides: Partial<TrainConfig> = {}): TrainConfig {
  return { ...structuredClone(DEFAULT_TRAIN_CONFIG), modelPath, datasetPath: '/dev/null', maxSteps: 5, ...overrides };
}

export function openTestStudio(appDataDir: string): Studio {
  return Studio.open({ appDataDir, host: 'web', appVersion: '0.0.0', logger: silentLogger, resourcesDir: path.join(appDataDir, 'no-resources') });
}

/**
 * Records a completed run whose adapter folder is a copy of the fixture adapter of `model`, as a
 * worker would have left it, and returns the run.
 */
export function seedCompletedRun(store: RunStore, model: FixtureModel, name: string): RunRecord {
  const run = store.createRun(trainConfigFor(path.join(FIXTURES, 'models', model), { name }));
  const adapterDir = path.join(run.runDir, 'adapter');
  fs.mkdirSync(path.dirname(adapterDir), { recursive: true });
  fs.cpSync(path.join(FIXTURES, 'adapters', `${model}-lora`), adapterDir, { recursive: true });
  store.addArtifact({ runId: run.id, kind: 'adapter', path: adapterDir, step: 5 });
  store.updateRunStatus(run.id, 'running', { startedAt: new Date().toISOString() });
  return store.updateRunStatus(run.id, 'completed', { finishedAt: new Date().toISOString() });
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the bundled CLI to completion with its own app data folder. */
export function runCli(args: string[], dataDir: string, timeoutMs = 60_000): CliResult {
  const result = spawnSync(process.execPath, [CLI_BUNDLE, ...args], {
    env: { ...process.env, LORA_STUDIO_HOME: dataDir, LORA_STUDIO_DEBUG: '' },
    encoding: 'utf8',
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
  });
  return { code: result.status, signal: result.signal, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

/** Starts the bundled CLI without waiting; the caller stops it. */
export function spawnCli(args: string[], dataDir: string): ChildProcess {
  return spawn(process.execPath, [CLI_BUNDLE, ...args], {
    env: { ...process.env, LORA_STUDIO_HOME: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A Node stack frame as V8 prints it (`    at fn (file:line:col)`). */
export const STACK_FRAME = /^\s+at .+:\d+:\d+\)?$/m;

/**
 * Makes `dir` read-only for this process: permission bits for a normal user, the immutable flag
 * for root (which ignores permission bits). Returns an undo function, or null when neither works.
 */
export function makeReadOnly(dir: string): (() => void) | null {
  const probe = path.join(dir, '.write-probe');
  const writable = () => {
    try {
      fs.writeFileSync(probe, '');
      fs.rmSync(probe);
      return true;
    } catch {
      return false;
    }
  };
  const mode = fs.statSync(dir).mode & 0o777;
  fs.chmodSync(dir, 0o555);
  if (!writable()) return () => fs.chmodSync(dir, mode);
  fs.chmodSync(dir, mode);

  const chattr = spawnSync('chattr', ['+i', dir], { encoding: 'utf8' });
  if (chattr.status === 0 && !writable()) return () => void spawnSync('chattr', ['-i', dir]);
  if (chattr.status === 0) spawnSync('chattr', ['-i', dir]);
  return null;
}
