/**
 * Electron main: single instance, the window, the menu, IPC to the Studio facade, and training
 * in utility processes. It owns no logic that could not run without Electron.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { app, dialog, shell, type BrowserWindow } from 'electron';
import { toErrorPayload } from '../shared/errors';
import { acquireDataDirLock, Studio, type HostDialogs } from '../services/studio';
import { forwardEvents, registerIpcHandlers } from './ipc';
import { createMainLogger } from './logger';
import { installMenu } from './menu';
import { createUtilityTransport } from './utility-transport';
import { createMainWindow, hardenSession, isAppUrl } from './window';

const here = path.dirname(fileURLToPath(import.meta.url));
const preload = path.join(here, '..', 'preload', 'index.cjs');
const rendererFile = path.join(here, '..', 'renderer', 'index.html');
const workerEntry = path.join(here, 'worker.js');
const devServerUrl = process.env.ELECTRON_RENDERER_URL;

let mainWindow: BrowserWindow | undefined;
let studio: Studio | undefined;

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  app.on('second-instance', () => {
    if (!mainWindow) return;
    if (mainWindow.isMinimized()) mainWindow.restore();
    mainWindow.focus();
  });
  void app.whenReady().then(start);
}

function createDialogs(): HostDialogs {
  return {
    chooseFolder: async (title) => {
      const result = await dialog.showOpenDialog({ title, properties: ['openDirectory', 'createDirectory'] });
      return result.canceled ? null : (result.filePaths[0] ?? null);
    },
    chooseFile: async (title) => {
      const result = await dialog.showOpenDialog({
        title,
        properties: ['openFile'],
        filters: [{ name: 'Datasets', extensions: ['jsonl', 'json', 'csv', 'tsv', 'parquet', 'txt'] }, { name: 'All files', extensions: ['*'] }],
      });
      return result.canceled ? null : (result.filePaths[0] ?? null);
    },
    showInFolder: async (target) => shell.showItemInFolder(target),
  };
}

async function start(): Promise<void> {
  const { logger, file: logFile } = createMainLogger();
  const appDataDir = app.getPath('userData');
  const lock = acquireDataDirLock(appDataDir);
  logger.info(`LoRA Studio ${app.getVersion()} starting; app data in ${appDataDir}`);

  try {
    studio = Studio.open({
      appDataDir,
      host: 'electron',
      appVersion: app.getVersion(),
      logger,
      logFile,
      resourcesDir: app.isPackaged ? process.resourcesPath : path.join(app.getAppPath(), 'resources'),
      ...(existsSync(workerEntry)
        ? {
            createTransport: () =>
              createUtilityTransport(workerEntry, { onOutput: (stream, text) => (stream === 'stderr' ? logger.warn(`worker: ${text.trimEnd()}`) : logger.debug(`worker: ${text.trimEnd()}`)) }),
          }
        : { trainingUnavailableReason: `the training worker ${workerEntry} is missing from this build` }),
      dialogs: createDialogs(),
      versions: { electron: process.versions.electron ?? '', chrome: process.versions.chrome ?? '' },
      recoverInterrupted: lock.owned,
    });
  } catch (error) {
    const payload = toErrorPayload(error);
    logger.error(`Failed to open the run store: ${payload.message}`);
    dialog.showErrorBox('LoRA Studio cannot start', `${payload.message}\n\n${payload.hint ?? ''}`);
    app.exit(1);
    return;
  }

  hardenSession(devServerUrl);
  registerIpcHandlers(studio, logger, (event) => isAppUrl(event.senderFrame?.url ?? '', rendererFile, devServerUrl));
  forwardEvents(studio, () => mainWindow?.webContents);
  installMenu(() => mainWindow);

  const open = () => {
    mainWindow = createMainWindow({ preload, rendererFile, devServerUrl, stateFile: path.join(appDataDir, 'window-state.json'), logger });
    mainWindow.on('closed', () => (mainWindow = undefined));
  };
  open();
  app.on('activate', () => {
    if (!mainWindow) open();
  });

  let quitting = false;
  app.on('before-quit', (event) => {
    if (quitting || !studio) return;
    event.preventDefault();
    quitting = true;
    logger.info('Quitting: stopping training workers');
    void studio
      .close()
      .catch((error: unknown) => logger.error('Failed to stop cleanly', error))
      .finally(() => {
        lock.release();
        app.quit();
      });
  });
  app.on('window-all-closed', () => {
    if (process.platform !== 'darwin') app.quit();
  });
}
