/**
 * electron-log for the main process: a file in the app's log folder plus the console. Services
 * receive it through the `Logger` interface; their messages carry the run id.
 */
import log from 'electron-log/main';
import type { Logger } from '../services/jobs';

export function createMainLogger(): { logger: Logger; file: string } {
  log.initialize();
  log.transports.file.level = 'info';
  log.transports.console.level = process.env.NODE_ENV === 'development' ? 'debug' : 'warn';
  const logger: Logger = {
    debug: (message, ...details) => log.debug(message, ...details),
    info: (message, ...details) => log.info(message, ...details),
    warn: (message, ...details) => log.warn(message, ...details),
    error: (message, ...details) => log.error(message, ...details),
  };
  return { logger, file: log.transports.file.getFile().path };
}
