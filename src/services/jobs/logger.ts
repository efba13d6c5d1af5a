/**
 * The logging interface of the services. Services never import electron, so the app passes
 * electron-log here, and the CLI and web bridge pass their own logger.
 */
export interface Logger {
  debug(message: string, ...details: unknown[]): void;
  info(message: string, ...details: unknown[]): void;
  warn(message: string, ...details: unknown[]): void;
  error(message: string, ...details: unknown[]): void;
}

function formatDetail(detail: unknown): string {
  if (detail instanceof Error) return detail.stack ?? detail.message;
  if (typeof detail === 'string') return detail;
  try {
    return JSON.stringify(detail);
  } catch {
    return String(detail);
  }
}

/** A logger that writes warnings and errors to stderr and drops debug and info lines. */
export function createStderrLogger(prefix = 'lora-studio'): Logger {
  const write = (level: string, message: string, details: unknown[]): void => {
    const suffix = details.length > 0 ? ` ${details.map(formatDetail).join(' ')}` : '';
    process.stderr.write(`${new Date().toISOString()} [${prefix}] ${level} ${message}${suffix}\n`);
  };
  return {
    debug: () => {},
    info: () => {},
    warn: (message, ...details) => write('warn', message, details),
    error: (message, ...details) => write('error', message, details),
  };
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
};
