/**
 * IPC handlers: one `ipcMain.handle` per StudioApi method. Each request is validated with the
 * method's zod schema (in `dispatchRequest`) before the facade sees it, and each reply is an
 * `IpcResult`, so errors keep their code and hint across the bridge.
 */
import { ipcMain, type IpcMainInvokeEvent, type WebContents } from 'electron';
import { dispatchRequest, type StudioApi } from '../shared/api';
import { StudioError, toErrorPayload } from '../shared/errors';
import { API_METHOD_NAMES, IPC_EVENT_CHANNEL, requestChannel, type IpcResult } from '../shared/ipc-channels';
import type { Logger } from '../services/jobs';
import type { Studio } from '../services/studio';

/** Registers every handler; `isTrustedSender` rejects frames other than the app's own page. */
export function registerIpcHandlers(api: StudioApi, logger: Logger, isTrustedSender: (event: IpcMainInvokeEvent) => boolean): void {
  for (const [namespace, methods] of Object.entries(API_METHOD_NAMES)) {
    for (const method of methods) {
      const channel = requestChannel(namespace, method);
      ipcMain.handle(channel, async (event, request: unknown): Promise<IpcResult> => {
        try {
          if (!isTrustedSender(event)) {
            throw new StudioError('INVALID_ARGUMENT', `Rejected ${channel} from ${event.senderFrame?.url ?? 'an unknown frame'}.`);
          }
          return { ok: true, value: (await dispatchRequest(api, namespace, method, request)) ?? null };
        } catch (error) {
          const payload = toErrorPayload(error);
          const runId = typeof request === 'object' && request !== null && 'id' in request ? ` (run ${String((request as { id: unknown }).id)})` : '';
          if (payload.code === 'INTERNAL') logger.error(`${namespace}.${method}${runId} failed: ${payload.message}`, error);
          else logger.warn(`${namespace}.${method}${runId} rejected: ${payload.code} ${payload.message}`);
          return { ok: false, error: payload };
        }
      });
    }
  }
}

/** Sends every Studio event to the window; returns the function that stops forwarding. */
export function forwardEvents(studio: Studio, target: () => WebContents | undefined): () => void {
  return studio.onAny((event, payload) => {
    const contents = target();
    if (contents && !contents.isDestroyed()) contents.send(IPC_EVENT_CHANNEL, { event, payload });
  });
}
