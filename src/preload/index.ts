/**
 * Preload (sandboxed, context-isolated): exposes `window.studio` and nothing else. Each API
 * method becomes one `ipcRenderer.invoke` on `studio:<namespace>.<method>`; failures come back
 * as `{ code, message, hint }` and reject the promise with that plain object, because Error
 * objects lose their extra fields when they cross the context bridge.
 */
import { contextBridge, ipcRenderer, webUtils, type IpcRendererEvent } from 'electron';
import type { StudioEventName, StudioEvents } from '../shared/api';
import { API_METHOD_NAMES, IPC_EVENT_CHANNEL, requestChannel, type IpcResult } from '../shared/ipc-channels';

type Listener = (payload: unknown) => void;

const listeners = new Map<StudioEventName, Set<Listener>>();

ipcRenderer.on(IPC_EVENT_CHANNEL, (_event: IpcRendererEvent, message: { event: StudioEventName; payload: unknown }) => {
  for (const listener of listeners.get(message.event) ?? []) listener(message.payload);
});

async function invoke(channel: string, request: unknown): Promise<unknown> {
  const result = (await ipcRenderer.invoke(channel, request)) as IpcResult;
  if (result.ok) return result.value;
  return Promise.reject(result.error);
}

function buildApi(): Record<string, unknown> {
  const api: Record<string, unknown> = {};
  for (const [namespace, methods] of Object.entries(API_METHOD_NAMES)) {
    const entry: Record<string, (request?: unknown) => Promise<unknown>> = {};
    for (const method of methods) entry[method] = (request?: unknown) => invoke(requestChannel(namespace, method), request);
    api[namespace] = entry;
  }
  api.on = <E extends StudioEventName>(event: E, listener: (payload: StudioEvents[E]) => void) => {
    const set = listeners.get(event) ?? new Set<Listener>();
    listeners.set(event, set);
    set.add(listener as Listener);
    return () => {
      set.delete(listener as Listener);
    };
  };
  api.pathForFile = (file: File) => webUtils.getPathForFile(file);
  return api;
}

contextBridge.exposeInMainWorld('studio', buildApi());
