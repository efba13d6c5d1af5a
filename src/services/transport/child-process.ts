/**
 * The `child_process.fork` implementation of WorkerTransport, used by the CLI, the web bridge and
 * tests. The desktop app uses Electron's `utilityProcess` instead (in `src/main`).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { ParentMessage, WorkerMessage, WorkerTransport } from '../../shared/protocol';
import { createStderrLogger } from '../jobs/logger';

const defaultLogger = createStderrLogger('worker-transport');

export interface ChildProcessTransportOptions {
  /** Arguments after the entry script. */
  args?: string[];
  /** Node flags for the worker. Default: the tsx loader when the entry ends in `.ts`, otherwise none. */
  execArgv?: string[];
  /** Environment of the worker. Default: the parent's environment. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * Receives the worker's stdout and stderr as text chunks. Without it, the worker writes to
   * the parent's stdout and stderr directly.
   */
  onOutput?: (stream: 'stdout' | 'stderr', text: string) => void;
  /**
   * Receives errors of the process or its IPC channel (a failed spawn or a failed send).
   * Default: one line on stderr per error.
   */
  onError?: (error: Error) => void;
}

/**
 * Returns the `--import` value that runs TypeScript through tsx. The loader is resolved from this
 * file, so the worker does not depend on the current directory; `tsx` is the fallback.
 */
function tsxImport(): string {
  try {
    return pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  } catch {
    return 'tsx';
  }
}

/**
 * Forks `workerEntry` and returns a transport for it. The process starts at once; its messages
 * use the `advanced` serialization (structured clone), which keeps NaN and Infinity in metrics.
 */
export function createChildProcessTransport(
  workerEntry: string,
  options: ChildProcessTransportOptions = {},
): WorkerTransport {
  const execArgv = options.execArgv ?? (workerEntry.endsWith('.ts') ? ['--import', tsxImport()] : []);
  const child: ChildProcess = fork(workerEntry, options.args ?? [], {
    execArgv,
    env: options.env ?? process.env,
    cwd: options.cwd,
    serialization: 'advanced',
    stdio: options.onOutput ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'inherit', 'inherit', 'ipc'],
  });

  const onError =
    options.onError ?? ((error: Error) => defaultLogger.error(`Training worker ${workerEntry}: ${error.message}`));
  const exitListeners: Array<(code: number | null, signal: string | null) => void> = [];
  let exitResult: { code: number | null; signal: string | null } | undefined;

  const notifyExit = (code: number | null, signal: string | null): void => {
    if (exitResult) return;
    exitResult = { code, signal };
    for (const listener of exitListeners) listener(code, signal);
  };

  if (options.onOutput) {
    const onOutput = options.onOutput;
    child.stdout?.setEncoding('utf8').on('data', (text: string) => onOutput('stdout', text));
    child.stderr?.setEncoding('utf8').on('data', (text: string) => onOutput('stderr', text));
  }

  // 'close' comes after 'exit' once the IPC channel is drained, so no message arrives after it.
  child.on('close', (code, signal) => notifyExit(code, signal));
  child.on('error', (error) => {
    onError(error);
    // A process that never spawned emits no 'close'.
    if (child.pid === undefined) notifyExit(null, null);
  });

  return {
    get pid() {
      return child.pid;
    },

    send(message: ParentMessage): void {
      if (!child.connected) {
        onError(new Error(`Cannot send "${message.type}": the worker's IPC channel is closed.`));
        return;
      }
      child.send(message, (error) => {
        if (error) onError(error);
      });
    },

    onMessage(listener: (message: WorkerMessage) => void): void {
      child.on('message', (message) => listener(message as WorkerMessage));
    },

    onExit(listener: (code: number | null, signal: string | null) => void): void {
      if (exitResult) listener(exitResult.code, exitResult.signal);
      else exitListeners.push(listener);
    },

    kill(signal: NodeJS.Signals = 'SIGTERM'): void {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}
