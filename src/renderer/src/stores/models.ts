import { defineStore } from 'pinia';
import type { ModelEntry, ModelInfo } from '../../../shared/api';
import type { ErrorPayload } from '../../../shared/errors';
import { studio } from '../api';
import { asError } from '../format';

/** The model chosen in the wizard, and the folders opened before. */
export const useModelsStore = defineStore('models', {
  state: () => ({
    current: null as ModelInfo | null,
    recent: [] as ModelEntry[],
    loading: false,
    error: null as ErrorPayload | null,
  }),
  getters: {
    ready: (state) => Boolean(state.current?.supported),
  },
  actions: {
    async inspect(path: string): Promise<ModelInfo | null> {
      this.loading = true;
      this.error = null;
      try {
        const info = await studio().models.inspect({ path });
        this.current = info;
        void this.loadRecent();
        return info;
      } catch (error) {
        this.error = asError(error);
        return null;
      } finally {
        this.loading = false;
      }
    },
    async loadRecent(): Promise<void> {
      try {
        this.recent = await studio().models.recent();
      } catch (error) {
        this.error = asError(error);
      }
    },
    async chooseFolder(): Promise<ModelInfo | null> {
      const folder = await studio().models.chooseFolder();
      return folder ? this.inspect(folder) : null;
    },
    clear(): void {
      this.current = null;
      this.error = null;
    },
  },
});
