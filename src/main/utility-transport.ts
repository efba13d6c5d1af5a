/**
 * WorkerTransport over Electron's `utilityProcess`: the desktop app's training worker runs in a
 * Chromium utility process (a Node environment without the renderer's privileges) and talks
 * through `process.parentPort` with structured-clone messages.
 */
import { utilityProcess, type UtilityProcess } from 'electron';
import type { ParentMessage, WorkerMessage, WorkerTransport } from '../shared/protocol';

export interface UtilityTransportOptions {
  /** Receives the worker's stdout and stderr as text. */
  onOutput?: (stream: 'stdout' | 'stderr', text: string) => void;
  env?: NodeJS.ProcessEnv;
}

export function createUtilityTransport(entry: string, options: UtilityTransportOptions = {}): WorkerTransport {
  const child: UtilityProcess = utilityProcess.fork(entry, [], {
    serviceName: 'LoRA Studio training worker',
    stdio: options.onOutput ? 'pipe' : 'inherit',
    env: options.env ?? process.env,
  });

  if (options.onOutput) {
    const onOutput = options.onOutput;
    child.stdout?.setEncoding('utf8').on('data', (text: string) => onOutput('stdout', text));
    child.stderr?.setEncoding('utf8').on('data', (text: string) => onOutput('stderr', text));
  }

  const exitListeners: Array<(code: number | null, signal: string | null) => void> = [];
  let exitCode: number | undefined;
  // utilityProcess reports only an exit code; a crash shows as a nonzero code, not a signal.
  child.on('exit', (code) => {
    exitCode = code;
    for (const listener of exitListeners) listener(code, null);
  });

  return {
    get pid() {
      return child.pid;
    },
    send(message: ParentMessage): void {
      if (exitCode === undefined) child.postMessage(message);
    },
    onMessage(listener: (message: WorkerMessage) => void): void {
      child.on('message', (message) => listener(message as WorkerMessage));
    },
    onExit(listener: (code: number | null, signal: string | null) => void): void {
      if (exitCode !== undefined) listener(exitCode, null);
      else exitListeners.push(listener);
    },
    kill(): void {
      if (exitCode === undefined) child.kill();
    },
  };
}
