/**
 * Services the CLI commands share: the run store, dataset service and job manager on one app
 * data folder, and the path of the bundled training worker.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { StudioError } from '../shared/errors';
import { DatasetService } from '../services/datasets';
import { JobManager, createStderrLogger } from '../services/jobs';
import { defaultAppDataDir } from '../services/paths';
import { RunStore } from '../services/store';
import { acquireDataDirLock } from '../services/studio';
import { createChildProcessTransport } from '../services/transport/child-process';

export interface CliContext {
  appDataDir: string;
  /**
   * True when this process holds the data folder's lock. When false, another process (the web
   * bridge, the desktop app or another CLI command) may be training runs stored here.
   */
  ownsDataDir: boolean;
  store: RunStore;
  datasets: DatasetService;
  jobs: JobManager;
  close(): Promise<void>;
}

/** Returns the folder of this bundle (out/node), or of the source file when run unbundled. */
export function bundleDir(): string {
  return path.dirname(fileURLToPath(import.meta.url));
}

/** Finds the repository (or installed package) root by walking up to package.json. */
export function packageRoot(): string {
  let dir = bundleDir();
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'resources'))) return dir;
    dir = path.dirname(dir);
  }
  return process.cwd();
}

export function workerEntry(): string {
  const bundled = path.join(bundleDir(), 'worker.mjs');
  if (fs.existsSync(bundled)) return bundled;
  const built = path.join(packageRoot(), 'out', 'node', 'worker.mjs');
  if (fs.existsSync(built)) return built;
  throw new StudioError('INTERNAL', 'The training worker bundle (out/node/worker.mjs) was not found.', 'Run `npm run build:node` first.');
}

export function openContext(dataDir: string | undefined, verbose: boolean): CliContext {
  const appDataDir = path.resolve(dataDir ?? defaultAppDataDir());
  prepareDataDir(appDataDir);
  const lock = acquireDataDirLock(appDataDir);
  let store: RunStore;
  try {
    store = RunStore.open(appDataDir);
  } catch (error) {
    lock.release();
    throw error;
  }

  // Only the lock holder may mark live runs interrupted: without the lock, a run that is
  // `running` may be training in the process that holds it.
  if (lock.owned) store.markInterruptedOnStartup();
  const logger = createStderrLogger('lora-studio');
  const entry = workerEntry();
  const jobs = new JobManager({
    store,
    logger: verbose ? logger : { debug() {}, info() {}, warn: logger.warn, error: logger.error },
    createTransport: () => createChildProcessTransport(entry, { onOutput: verbose ? undefined : () => {} }),
  });
  return {
    appDataDir,
    ownsDataDir: lock.owned,
    store,
    datasets: new DatasetService(appDataDir, store),
    jobs,
    async close() {
      try {
        await jobs.shutdown();
        store.close();
      } finally {
        lock.release();
      }
    },
  };
}

/** Creates the data folder, or raises STORE_UNREADABLE when the path is a file or lies under one. */
function prepareDataDir(appDataDir: string): void {
  try {
    fs.mkdirSync(appDataDir, { recursive: true });
    if (!fs.statSync(appDataDir).isDirectory()) throw new Error('not a folder');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'EEXIST' || (error as Error).message === 'not a folder'
      ? 'is a file, not a folder'
      : `cannot be created (${(error as Error).message})`;
    throw new StudioError(
      'STORE_UNREADABLE',
      `The data folder ${appDataDir} ${reason}.`,
      'Pass --data-dir with a folder path (it is created when missing).',
    );
  }
}

/**
 * Raises RUN_STATE when the run is queued, running or paused and another process holds the data
 * folder's lock, because that process may be training it.
 */
export function assertNotLiveElsewhere(context: CliContext, runId: string, action: string): void {
  if (context.ownsDataDir) return;
  const run = context.store.getRun(runId);
  if (run.status !== 'queued' && run.status !== 'running' && run.status !== 'paused') return;
  throw new StudioError(
    'RUN_STATE',
    `Run "${runId}" is ${run.status} in another LoRA Studio process that uses ${context.appDataDir}, so it cannot be ${action} here.`,
    'Stop the run in that process (the web UI, the desktop app or the other CLI command), then try again.',
  );
}
