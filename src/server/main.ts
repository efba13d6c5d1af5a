/**
 * `npm run serve`: starts the web bridge on 127.0.0.1 with a new token and prints the URL.
 *
 *   tsx src/server/main.ts [--port N] [--host ADDRESS] [--data-dir DIR] [--renderer DIR]
 *
 * `--host` other than a loopback address exposes the API (token-protected) on that interface.
 * Use it only on a trusted network, or reach the machine through an SSH tunnel instead.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createChildProcessTransport } from '../services/transport/child-process';
import { acquireDataDirLock, defaultAppDataDir, Studio } from '../services/studio';
import type { Logger } from '../services/jobs';
import { startBridge } from './index';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function createLogger(): Logger {
  const write = (level: string) => (message: string, ...details: unknown[]) => {
    const suffix = details.map((detail) => (detail instanceof Error ? ` ${detail.stack ?? detail.message}` : ` ${String(detail)}`)).join('');
    process.stderr.write(`${new Date().toISOString()} ${level} ${message}${suffix}\n`);
  };
  return { debug: () => {}, info: write('info'), warn: write('warn'), error: write('error') };
}

/**
 * Finds the training worker: `LORA_STUDIO_WORKER` if set, else the bundle `out/node/worker.mjs`
 * (`npm run build:node`). tfjs-core registers its gradients only in its ES module build, which
 * the bundle uses, so the TypeScript source run through tsx is the last resort.
 */
function findWorker(logger: Logger): string | undefined {
  const candidates = [process.env.LORA_STUDIO_WORKER, path.join(repoRoot, 'out', 'node', 'worker.mjs')];
  const found = candidates.find((file): file is string => Boolean(file) && existsSync(file as string));
  if (found) return found;
  const source = path.join(repoRoot, 'src', 'engine', 'worker.ts');
  if (!existsSync(source)) return undefined;
  logger.warn(`out/node/worker.mjs is missing; training runs ${source} through tsx. Run \`npm run build:node\` first.`);
  return source;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.LORA_STUDIO_PORT ?? '0' },
      host: { type: 'string', default: '127.0.0.1' },
      'data-dir': { type: 'string', default: process.env.LORA_STUDIO_DATA_DIR ?? defaultAppDataDir() },
      renderer: { type: 'string', default: path.join(repoRoot, 'out', 'renderer') },
      token: { type: 'string' },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`Invalid --port "${values.port}": expected an integer from 0 to 65535 (0 picks a free port).\n`);
    process.exit(2);
  }
  const logger = createLogger();
  const appDataDir = path.resolve(values['data-dir']);
  const lock = acquireDataDirLock(appDataDir);
  if (!lock.owned) logger.warn(`Another LoRA Studio process uses ${appDataDir}; interrupted runs are left to it`);

  const workerEntry = findWorker(logger);
  const hasWorker = workerEntry !== undefined;
  const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const studio = Studio.open({
    appDataDir,
    host: 'web',
    appVersion: pkg.version,
    logger,
    resourcesDir: path.join(repoRoot, 'resources'),
    ...(hasWorker
      ? { createTransport: () => createChildProcessTransport(workerEntry, { onError: (error) => logger.error('Training worker error', error) }) }
      : { trainingUnavailableReason: 'the training worker is not built; run `npm run build:node`' }),
    recoverInterrupted: lock.owned,
  });

  if (!existsSync(path.join(values.renderer, 'index.html'))) {
    logger.warn(`${values.renderer} has no index.html; run \`npm run build\` to build the UI`);
  }
  const bridge = await startBridge({ api: studio, rendererDir: values.renderer, logger, host: values.host, port, ...(values.token ? { token: values.token } : {}) });
  process.stdout.write(`LoRA Studio web UI: ${bridge.openUrl}\nApp data folder: ${appDataDir}\n`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info(`Received ${signal}; stopping workers and the server`);
    await bridge.close();
    await studio.close();
    lock.release();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((error: unknown) => {
  process.stderr.write(`LoRA Studio server failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
  const hint = (error as { hint?: string }).hint;
  if (hint) process.stderr.write(`${hint}\n`);
  process.exit(1);
});
