import { defineStore } from 'pinia';
import type { ExportKind, ExportResult } from '../../../shared/api';
import type { ErrorPayload } from '../../../shared/errors';
import { studio } from '../api';
import { asError } from '../format';

export interface ExportState {
  kind: ExportKind;
  running: boolean;
  fraction: number;
  message: string;
  result: ExportResult | null;
  error: ErrorPayload | null;
}

/** Export jobs per run: progress, the written folder, or the error. */
export const useExportsStore = defineStore('exports', {
  state: () => ({
    byRun: {} as Record<string, ExportState>,
  }),
  actions: {
    async start(runId: string, kind: ExportKind, destination: string): Promise<ExportResult | null> {
      const state: ExportState = { kind, running: true, fraction: 0, message: 'Starting', result: null, error: null };
      this.byRun[runId] = state;
      const entry = this.byRun[runId];
      const unsubscribe = studio().on('export-progress', (event) => {
        if (event.runId !== runId || event.kind !== kind) return;
        entry.fraction = event.fraction;
        entry.message = event.message;
      });
      try {
        const result = await studio().exports.start({ runId, kind, destination });
        entry.result = result;
        entry.fraction = 1;
        return result;
      } catch (error) {
        entry.error = asError(error);
        return null;
      } finally {
        unsubscribe();
        entry.running = false;
      }
    },
    async chooseDestination(): Promise<string | null> {
      return studio().exports.chooseDestination();
    },
    async showInFolder(path: string): Promise<void> {
      await studio().exports.showInFolder({ path });
    },
  },
});
