import { defineStore } from 'pinia';
import type { DatasetDetail, DatasetPreview, DatasetSummary, StudioEvents } from '../../../shared/api';
import type { ErrorPayload } from '../../../shared/errors';
import { studio } from '../api';
import { asError } from '../format';

/** Imported datasets, the one chosen in the wizard, import progress and the preview. */
export const useDatasetsStore = defineStore('datasets', {
  state: () => ({
    list: [] as DatasetSummary[],
    current: null as DatasetDetail | null,
    importing: false,
    progress: null as StudioEvents['dataset-progress'] | null,
    error: null as ErrorPayload | null,
    preview: null as DatasetPreview | null,
    previewLoading: false,
    previewError: null as ErrorPayload | null,
  }),
  getters: {
    /** Fraction of the file read during an import, 0..1. */
    progressFraction: (state) =>
      state.progress && state.progress.totalBytes > 0 ? state.progress.bytesRead / state.progress.totalBytes : 0,
  },
  actions: {
    async load(): Promise<void> {
      try {
        this.list = await studio().datasets.list();
      } catch (error) {
        this.error = asError(error);
      }
    },
    async importFile(path: string, modelPath?: string): Promise<DatasetDetail | null> {
      this.importing = true;
      this.error = null;
      this.progress = null;
      const unsubscribe = studio().on('dataset-progress', (event) => {
        if (event.path === path) this.progress = event;
      });
      try {
        const detail = await studio().datasets.import(modelPath ? { path, modelPath } : { path });
        this.current = detail;
        this.preview = null;
        await this.load();
        return detail;
      } catch (error) {
        this.error = asError(error);
        return null;
      } finally {
        unsubscribe();
        this.importing = false;
      }
    },
    async select(id: string): Promise<void> {
      this.error = null;
      try {
        this.current = await studio().datasets.get({ id });
        this.preview = null;
      } catch (error) {
        this.error = asError(error);
      }
    },
    async loadPreview(modelPath?: string, trainOnPrompt = false): Promise<void> {
      if (!this.current) return;
      this.previewLoading = true;
      this.previewError = null;
      try {
        this.preview = await studio().datasets.preview({
          id: this.current.id,
          limit: 5,
          trainOnPrompt,
          ...(modelPath ? { modelPath } : {}),
        });
      } catch (error) {
        this.previewError = asError(error);
      } finally {
        this.previewLoading = false;
      }
    },
    async remove(id: string): Promise<void> {
      try {
        await studio().datasets.remove({ id });
        if (this.current?.id === id) this.current = null;
        await this.load();
      } catch (error) {
        this.error = asError(error);
      }
    },
  },
});
