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
import { createChildProcessTransport } from '../services/transport/child-process';

export interface CliContext {
  appDataDir: string;
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
  fs.mkdirSync(appDataDir, { recursive: true });
  const store = RunStore.open(appDataDir);
  store.markInterruptedOnStartup();
  const logger = createStderrLogger('lora-studio');
  const entry = workerEntry();
  const jobs = new JobManager({
    store,
    logger: verbose ? logger : { debug() {}, info() {}, warn: logger.warn, error: logger.error },
    createTransport: () => createChildProcessTransport(entry, { onOutput: verbose ? undefined : () => {} }),
  });
  return {
    appDataDir,
    store,
    datasets: new DatasetService(appDataDir, store),
    jobs,
    async close() {
      await jobs.shutdown();
      store.close();
    },
  };
}
